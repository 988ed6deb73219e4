import CDTensor
import Foundation
import Testing

/// `OpTimer`: off by default, outermost calls only, the enabling thread only.
@Suite(.serialized) struct OpTimerTests {
    func busy(_ seconds: Double) {
        let end = Date(timeIntervalSinceNow: seconds)
        while Date() < end {}
    }

    @Test func countsOutermostCallsOnTheTimingThread() {
        OpTimer.reset()
        let ignored = OpTimer.begin(.conv)
        busy(0.01)
        OpTimer.end(ignored)
        #expect(OpTimer.totals[.conv] == 0, "off by default")

        OpTimer.enable(true)
        let outer = OpTimer.begin(.attention)
        let inner = OpTimer.begin(.matmul)  // a kernel inside another: not counted twice
        busy(0.02)
        OpTimer.end(inner)
        OpTimer.end(outer)
        let other = Thread {
            let t = OpTimer.begin(.norm)
            Thread.sleep(forTimeInterval: 0.01)
            OpTimer.end(t)
        }
        other.start()
        Thread.sleep(forTimeInterval: 0.05)
        OpTimer.enable(false)
        let totals = OpTimer.totals
        #expect((totals[.attention] ?? 0) >= 0.02)
        #expect(totals[.matmul] == 0 && totals[.norm] == 0, "\(totals)")
    }
}
