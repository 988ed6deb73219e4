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
