import Dispatch
import Foundation

/// SIGTERM, SIGUSR1 and SIGINT ask for a stop at the next step boundary (with a checkpoint) and a
/// clean exit. The signals are ignored at the process level and delivered to a dispatch source, so
/// nothing runs in signal-handler context; the trainer polls `received` between steps, the idle
/// loop sleeps in `wait` and wakes at once. (Under mpirun, systemd should send SIGUSR1: mpirun
/// forwards it to every rank at once, while after SIGTERM it kills the ranks about 1 s later.)
public final class StopSignals: @unchecked Sendable {
    public static let stopSignals: [Int32] = [SIGTERM, SIGUSR1, SIGINT]

    private let condition = NSCondition()
    private var signal: Int32?
    private var sources: [any DispatchSourceSignal] = []

    /// Call it on the main thread before other threads start: they inherit its signal mask, and
    /// the signals are unblocked here (a parent may have started this process with them blocked).
    public init(_ signals: [Int32] = StopSignals.stopSignals) {
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        for s in signals {
            Foundation.signal(s, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: s, queue: .global())
            source.setEventHandler { [weak self] in self?.trigger(s) }
            source.resume()
            sources.append(source)
        }
    }

    deinit { sources.forEach { $0.cancel() } }

    /// The first stop signal received (nil: none yet).
    public var received: Int32? {
        condition.lock()
        defer { condition.unlock() }
        return signal
    }

    /// Records a stop as if `signal` had arrived (also used by tests and a stop command).
    public func trigger(_ signal: Int32) {
        condition.lock()
        if self.signal == nil { self.signal = signal }
        condition.broadcast()
        condition.unlock()
    }

    /// Sleeps up to `seconds` or until a stop signal arrives; returns whether one has.
    @discardableResult
    public func wait(seconds: Double) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        if signal == nil { _ = condition.wait(until: Date(timeIntervalSinceNow: seconds)) }
        return signal != nil
    }

    public static func name(_ signal: Int32) -> String {
        switch signal {
        case SIGTERM: "SIGTERM"
        case SIGUSR1: "SIGUSR1"
        case SIGINT: "SIGINT"
        default: "signal \(signal)"
        }
    }
}
