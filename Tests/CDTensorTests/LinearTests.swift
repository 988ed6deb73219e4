import Testing
@testable import CDTensor

@Suite struct LinearTests {
    @Test(arguments: [(7, 5, 3, true), (1, 9, 4, false), (13, 17, 11, true)])
    func forwardMatchesNaive(m: Int, k: Int, n: Int, bias: Bool) {
        var rng = SeededRandom(seed: 1)
        let x = rng.tensor([m, k]), w = rng.tensor([n, k]), b = bias ? rng.tensor([n]) : nil
        let fast = Tensor(zeros: [m, n]), ref = Tensor(zeros: [m, n])
        linearForward(x: x, weight: w, bias: b, out: fast)
        linearForwardNaive(x: x, weight: w, bias: b, out: ref)
        expectClose(fast, ref, "linear forward \(m)x\(k)->\(n)")
    }

    @Test func backwardMatchesNaiveAndFiniteDifferences() {
        var rng = SeededRandom(seed: 2)
        let (m, k, n) = (5, 7, 3)
        let x = rng.tensor([m, k]), w = rng.tensor([n, k]), b = rng.tensor([n]), r = rng.tensor([m, n])
        // Pre-filled gradients check accumulation (+=).
        let dx = rng.tensor([m, k]), dw = rng.tensor([n, k]), db = rng.tensor([n])
        let dx0 = dx.copy(), dw0 = dw.copy(), db0 = db.copy()
        let dxN = dx.copy(), dwN = dw.copy(), dbN = db.copy()
        linearBackward(x: x, weight: w, dOut: r, dx: dx, dWeight: dw, dBias: db)
        linearBackwardNaive(x: x, weight: w, dOut: r, dx: dxN, dWeight: dwN, dBias: dbN)
        expectClose(dx, dxN, "linear dx"); expectClose(dw, dwN, "linear dW"); expectClose(db, dbN, "linear db")

        let out = Tensor(zeros: [m, n])
        let loss = { linearForward(x: x, weight: w, bias: b, out: out); return projection(out, r) }
        for (p, g, g0, name) in [(x, dx, dx0, "dx"), (w, dw, dw0, "dW"), (b, db, db0, "db")] {
            let delta = Tensor(zeros: g.shape)
            for i in 0..<g.count { delta.pointer[i] = g.pointer[i] - g0.pointer[i] }
            expectGradient("linear \(name)", param: p, analytic: delta, loss: loss)
        }
    }

    @Test func frozenWeightLeavesNoGradientAndInputGradientStillFlows() {
        var rng = SeededRandom(seed: 3)
        let x = rng.tensor([4, 6]), w = rng.tensor([2, 6]), r = rng.tensor([4, 2])
        let dx = Tensor(zeros: [4, 6])
        linearBackward(x: x, weight: w, dOut: r, dx: dx, dWeight: nil, dBias: nil)
        let ref = Tensor(zeros: [4, 6])
        linearBackwardNaive(x: x, weight: w, dOut: r, dx: ref, dWeight: nil, dBias: nil)
        expectClose(dx, ref, "linear dx with frozen weight")
    }

    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func matmulTransposes(transA: Bool, transB: Bool) {
        var rng = SeededRandom(seed: 4)
        let (m, k, n) = (5, 3, 7)
        let a = rng.tensor(transA ? [k, m] : [m, k]), b = rng.tensor(transB ? [n, k] : [k, n])
        let fast = Tensor(zeros: [m, n]), ref = Tensor(zeros: [m, n])
        matmulForward(a: a, b: b, transA: transA, transB: transB, alpha: 0.5, out: fast)
        matmulForwardNaive(a: a, b: b, transA: transA, transB: transB, alpha: 0.5, out: ref)
        expectClose(fast, ref, "matmul forward tA=\(transA) tB=\(transB)")

        let r = rng.tensor([m, n])
        let da = Tensor(zeros: a.shape), db = Tensor(zeros: b.shape)
        matmulBackward(a: a, b: b, transA: transA, transB: transB, alpha: 0.5, dOut: r, dA: da, dB: db)
        let loss = { matmulForward(a: a, b: b, transA: transA, transB: transB, alpha: 0.5, out: fast); return projection(fast, r) }
        expectGradient("matmul dA tA=\(transA) tB=\(transB)", param: a, analytic: da, loss: loss)
        expectGradient("matmul dB tA=\(transA) tB=\(transB)", param: b, analytic: db, loss: loss)
    }
}
