import Foundation
import Testing
@testable import CDTensor

@Suite struct ActivationTests {
    @Test(arguments: Activation.allCases)
    func matchesNaiveAndFiniteDifferences(_ kind: Activation) {
        var rng = SeededRandom(seed: 41)
        let x = rng.tensor([3, 13], -5, 5)  // 39 elements: 8-lane blocks plus a tail
        let y = Tensor(zeros: x.shape), ref = Tensor(zeros: x.shape)
        activationForward(kind, x: x, out: y)
        activationForwardNaive(kind, x: x, out: ref)
        expectClose(y, ref, rtol: 2e-6, atol: 1e-6, "\(kind) forward")

        let dy = rng.tensor(x.shape)
        let dx = Tensor(zeros: x.shape), dxN = Tensor(zeros: x.shape)
        activationBackward(kind, x: x, dOut: dy, dx: dx)
        activationBackwardNaive(kind, x: x, dOut: dy, dx: dxN)
        expectClose(dx, dxN, rtol: 1e-5, atol: 1e-6, "\(kind) backward")
        expectGradient("\(kind) dx", param: x, analytic: dx, eps: 1e-3, loss: { activationForward(kind, x: x, out: y); return projection(y, dy) })
    }

    @Test(arguments: Activation.allCases)
    func finiteAtExtremeInputs(_ kind: Activation) {
        let values: [Float] = [-1e30, -1e4, -100, -88.5, -87.4, -20, 0, 20, 87.4, 88.5, 100, 1e4, 1e30, -3.4e38, 3.4e38, 1e-30]
        let x = Tensor(values, shape: [values.count])
        let y = Tensor(zeros: x.shape), dx = Tensor(zeros: x.shape)
        activationForward(kind, x: x, out: y)
        activationBackward(kind, x: x, dOut: Tensor(zeros: x.shape).filled(1), dx: dx)
        #expect(y.array.allSatisfy { $0.isFinite }, "\(kind) forward at extremes: \(y.array)")
        #expect(dx.array.allSatisfy { $0.isFinite }, "\(kind) backward at extremes: \(dx.array)")
        // Large positive inputs pass through with slope 1, large negative ones vanish with slope 0.
        for i in [0, 1, 13] { #expect(abs(y.pointer[i]) < 1e-30 && abs(dx.pointer[i]) < 1e-30, "\(kind)(\(values[i])) = \(y.pointer[i]), slope \(dx.pointer[i])") }
        for i in [7, 11, 12, 14] { #expect(y.pointer[i] == values[i] && dx.pointer[i] == 1, "\(kind)(\(values[i])) = \(y.pointer[i]), slope \(dx.pointer[i])") }
        // Where Double still resolves it, the value matches the definition.
        let ref = Tensor(zeros: x.shape), dref = Tensor(zeros: x.shape)
        activationForwardNaive(kind, x: x, out: ref)
        activationBackwardNaive(kind, x: x, dOut: Tensor(zeros: x.shape).filled(1), dx: dref)
        for i in [2, 3, 4, 5, 6, 8, 9, 10] {
            #expect(abs(y.pointer[i] - ref.pointer[i]) <= 1e-6 * max(1, abs(ref.pointer[i])), "\(kind)(\(values[i])) = \(y.pointer[i]) vs \(ref.pointer[i])")
            #expect(abs(dx.pointer[i] - dref.pointer[i]) <= 1e-5, "\(kind)'(\(values[i])) = \(dx.pointer[i]) vs \(dref.pointer[i])")
        }
    }

    @Test func gegluMatchesNaiveAndFiniteDifferences() {
        var rng = SeededRandom(seed: 42)
        let x = rng.tensor([2, 3, 10], -3, 3), y = Tensor(zeros: [2, 3, 5]), ref = Tensor(zeros: [2, 3, 5])
        gegluForward(x: x, out: y)
        gegluForwardNaive(x: x, out: ref)
        expectClose(y, ref, rtol: 1e-5, atol: 1e-6, "GEGLU forward")
        let dy = rng.tensor(y.shape), dx = Tensor(zeros: x.shape), dxN = Tensor(zeros: x.shape)
        gegluBackward(x: x, dOut: dy, dx: dx)
        gegluBackwardNaive(x: x, dOut: dy, dx: dxN)
        expectClose(dx, dxN, rtol: 1e-5, atol: 1e-6, "GEGLU backward")
        expectGradient("GEGLU dx", param: x, analytic: dx, eps: 1e-3, loss: { gegluForward(x: x, out: y); return projection(y, dy) })
    }
}

@Suite struct VectorMathTests {
    @Test func erf8AndGeluMatchLibm() {
        // Every 1/1024 on [-8, 8] (both sides of the ±4 clamp), then NaN and infinities.
        var worstErf = 0.0, worstGelu = 0.0, worstSlope = 0.0
        for start in stride(from: -8192, to: 8192, by: 8) {
            let x = Vec8((0..<8).map { Float(start + $0) / 1024 })
            let e = erf8(x), g = gelu8(x), d = geluDerivative8(x)
            for i in 0..<8 {
                let xd = Double(x[i])
                let cdf = 0.5 * (1 + Foundation.erf(xd / 2.0.squareRoot()))
                worstErf = max(worstErf, abs(Double(e[i]) - Foundation.erf(xd)))
                worstGelu = max(worstGelu, abs(Double(g[i]) - xd * cdf) / max(1, abs(xd)))
                worstSlope = max(worstSlope, abs(Double(d[i]) - (cdf + xd * Foundation.exp(-xd * xd / 2) / (2 * Double.pi).squareRoot())))
            }
        }
        #expect(worstErf < 5e-7, "erf8 absolute error \(worstErf)")
        #expect(worstGelu < 3e-7, "gelu8 error \(worstGelu) (relative above |x| = 1)")
        #expect(worstSlope < 5e-7, "GELU slope error \(worstSlope)")
        let special = Vec8(.nan, .infinity, -.infinity, 0, 1e30, -1e30, 0, 0)
        let e = erf8(special), g = gelu8(special), d = geluDerivative8(special)
        #expect(e[0].isNaN && g[0].isNaN && d[0].isNaN)
        #expect(e[1] == 1 && e[2] == -1 && e[3] == 0 && g[3] == 0 && d[3] == 0.5)
        #expect(g[4] == 1e30 && d[4] == 1 && d[5] == 0 && g[5] == 0 && d[1] == 1 && d[2] == 0)
    }

    @Test func exp8AndLog8MatchLibm() {
        var worstExp: Float = 0, worstLog: Float = 0
        var rng = SeededRandom(seed: 81)
        for _ in 0..<2000 {
            let x = Vec8((0..<8).map { _ in rng.uniform(-87, 88) })
            let e = exp8(x)
            for i in 0..<8 { worstExp = max(worstExp, abs(e[i] - Foundation.exp(x[i])) / Foundation.exp(x[i])) }
            let p = Vec8((0..<8).map { _ in Foundation.exp(rng.uniform(-80, 80)) })
            let l = log8(p)
            for i in 0..<8 { worstLog = max(worstLog, abs(l[i] - Foundation.log(p[i])) / max(1, abs(Foundation.log(p[i])))) }
        }
        #expect(worstExp < 4e-7, "exp8 relative error \(worstExp)")
        #expect(worstLog < 4e-7, "log8 error \(worstLog)")
        let special = log8(Vec8(0, .infinity, -1, .nan, 1, 2, 0.5, 1.2e-38))
        #expect(special[0] == -.infinity && special[1] == .infinity && special[2].isNaN && special[3].isNaN)
        #expect(special[4] == 0 && abs(special[5] - 0.6931472) < 1e-7 && abs(special[7] - Foundation.log(Float(1.2e-38))) < 1e-5)
    }
}
