import Testing
@testable import CDTensor

@Suite struct NormalizationTests {
    @Test(arguments: [false, true])
    func groupNormMatchesNaiveAndFiniteDifferences(silu: Bool) {
        var rng = SeededRandom(seed: 21)
        let (n, c, groups) = (2, 6, 3)
        let x = rng.tensor([n, c, 3, 5], -2, 3), gamma = rng.tensor([c], 0.5, 1.5), beta = rng.tensor([c])
        let out = Tensor(zeros: x.shape), ref = Tensor(zeros: x.shape)
        let stats = GroupNormStats(batch: n, groups: groups), statsN = GroupNormStats(batch: n, groups: groups)
        groupNormForward(x: x, gamma: gamma, beta: beta, groups: groups, eps: 1e-5, silu: silu, out: out, stats: stats)
        groupNormForwardNaive(x: x, gamma: gamma, beta: beta, groups: groups, eps: 1e-5, silu: silu, out: ref, stats: statsN)
        expectClose(out, ref, "group norm (silu \(silu)) forward")
        expectClose(stats.rstd, statsN.rstd, "group norm rstd")

        let dy = rng.tensor(x.shape)
        let dx = Tensor(zeros: x.shape), dg = Tensor(zeros: [c]), db = Tensor(zeros: [c])
        let dxN = Tensor(zeros: x.shape), dgN = Tensor(zeros: [c]), dbN = Tensor(zeros: [c])
        groupNormBackward(x: x, gamma: gamma, beta: beta, groups: groups, silu: silu, stats: stats, dOut: dy,
                          dx: dx, dGamma: dg, dBeta: db)
        groupNormBackwardNaive(x: x, gamma: gamma, beta: beta, groups: groups, silu: silu, stats: statsN, dOut: dy,
                               dx: dxN, dGamma: dgN, dBeta: dbN)
        expectClose(dx, dxN, rtol: 1e-4, atol: 1e-5, "group norm dx")
        expectClose(dg, dgN, rtol: 1e-4, atol: 1e-5, "group norm dgamma")
        expectClose(db, dbN, rtol: 1e-4, atol: 1e-5, "group norm dbeta")

        let loss = {
            groupNormForward(x: x, gamma: gamma, beta: beta, groups: groups, eps: 1e-5, silu: silu, out: out,
                             stats: GroupNormStats(batch: n, groups: groups))
            return projection(out, dy)
        }
        expectGradient("group norm dx", param: x, analytic: dx, eps: 1e-2, tol: 2e-2, loss: loss)
        expectGradient("group norm dgamma", param: gamma, analytic: dg, loss: loss)
        expectGradient("group norm dbeta", param: beta, analytic: db, loss: loss)
    }

    @Test func groupNormNormalizesLargeOffsets() {
        // A large common offset must not destroy the variance (two-pass statistics).
        let x = Tensor((0..<64).map { 1000 + Float($0 % 8) * 0.01 }, shape: [1, 4, 4, 4])
        let out = Tensor(zeros: x.shape), stats = GroupNormStats(batch: 1, groups: 2)
        groupNormForward(x: x, gamma: Tensor(zeros: [4]).filled(1), beta: Tensor(zeros: [4]), groups: 2, eps: 1e-6,
                         out: out, stats: stats)
        let ref = Tensor(zeros: x.shape)
        groupNormForwardNaive(x: x, gamma: Tensor(zeros: [4]).filled(1), beta: Tensor(zeros: [4]), groups: 2, eps: 1e-6,
                              out: ref, stats: GroupNormStats(batch: 1, groups: 2))
        expectClose(out, ref, rtol: 1e-3, atol: 1e-3, "group norm at offset 1000")
    }

    @Test func layerNormMatchesNaiveAndFiniteDifferences() {
        var rng = SeededRandom(seed: 22)
        let (m, d) = (5, 11)
        let x = rng.tensor([m, d], -2, 2), gamma = rng.tensor([d], 0.5, 1.5), beta = rng.tensor([d])
        let out = Tensor(zeros: x.shape), ref = Tensor(zeros: x.shape)
        let mean = Tensor(zeros: [m]), rstd = Tensor(zeros: [m]), meanN = Tensor(zeros: [m]), rstdN = Tensor(zeros: [m])
        layerNormForward(x: x, gamma: gamma, beta: beta, eps: 1e-5, out: out, mean: mean, rstd: rstd)
        layerNormForwardNaive(x: x, gamma: gamma, beta: beta, eps: 1e-5, out: ref, mean: meanN, rstd: rstdN)
        expectClose(out, ref, "layer norm forward")

        let dy = rng.tensor(x.shape)
        let dx = Tensor(zeros: x.shape), dg = Tensor(zeros: [d]), db = Tensor(zeros: [d])
        let dxN = Tensor(zeros: x.shape), dgN = Tensor(zeros: [d]), dbN = Tensor(zeros: [d])
        layerNormBackward(x: x, gamma: gamma, mean: mean, rstd: rstd, dOut: dy, dx: dx, dGamma: dg, dBeta: db)
        layerNormBackwardNaive(x: x, gamma: gamma, mean: meanN, rstd: rstdN, dOut: dy, dx: dxN, dGamma: dgN, dBeta: dbN)
        expectClose(dx, dxN, rtol: 1e-4, "layer norm dx")
        expectClose(dg, dgN, rtol: 1e-4, "layer norm dgamma")
        expectClose(db, dbN, rtol: 1e-4, "layer norm dbeta")

        let loss = {
            layerNormForward(x: x, gamma: gamma, beta: beta, eps: 1e-5, out: out, mean: Tensor(zeros: [m]), rstd: Tensor(zeros: [m]))
            return projection(out, dy)
        }
        expectGradient("layer norm dx", param: x, analytic: dx, tol: 2e-2, loss: loss)
        expectGradient("layer norm dgamma", param: gamma, analytic: dg, loss: loss)
        expectGradient("layer norm dbeta", param: beta, analytic: db, loss: loss)
    }

    @Test func softmaxMatchesNaiveAndFiniteDifferences() {
        var rng = SeededRandom(seed: 23)
        let x = rng.tensor([3, 13], -3, 3)
        let y = Tensor(zeros: x.shape), ref = Tensor(zeros: x.shape)
        softmaxForward(x: x, out: y)
        softmaxForwardNaive(x: x, out: ref)
        expectClose(y, ref, rtol: 1e-5, atol: 1e-7, "softmax forward")

        let dy = rng.tensor(x.shape)
        let dx = Tensor(zeros: x.shape), dxN = Tensor(zeros: x.shape)
        softmaxBackward(out: y, dOut: dy, dx: dx)
        softmaxBackwardNaive(out: ref, dOut: dy, dx: dxN)
        expectClose(dx, dxN, rtol: 1e-4, atol: 1e-6, "softmax dx")
        let out = Tensor(zeros: x.shape)
        expectGradient("softmax dx", param: x, analytic: dx, eps: 1e-3, loss: { softmaxForward(x: x, out: out); return projection(out, dy) })
    }

    @Test func softmaxStaysFiniteAtExtremes() {
        let x = Tensor([1e30, -1e30, 0, 88, 89, -88, -1e4, 1e4, 3.4e38,
                        -.infinity, -.infinity, -.infinity, -.infinity, -.infinity, -.infinity, -.infinity, -.infinity, -.infinity,
                        -.infinity, 0, -.infinity, 1, -.infinity, 2, -.infinity, 3, -.infinity], shape: [3, 9])
        let y = Tensor(zeros: x.shape)
        softmaxForward(x: x, out: y)
        #expect(y.array.allSatisfy { $0.isFinite }, "softmax produced \(y.array)")
        let rowSums = (0..<3).map { r in (0..<9).reduce(Float(0)) { $0 + y.pointer[r * 9 + $1] } }
        #expect(abs(rowSums[0] - 1) < 1e-6 && abs(rowSums[2] - 1) < 1e-6)
        #expect(rowSums[1] == 0, "a fully masked row gives zeros")
        let ref = Tensor(zeros: [1, 9]); softmaxForwardNaive(x: x[2].reshaped([1, 9]), out: ref)
        expectClose(y[2].reshaped([1, 9]), ref, rtol: 1e-5, atol: 1e-7, "softmax with -inf entries")
    }
}

extension Tensor {
    func filled(_ v: Float) -> Tensor { fill(v); return self }
}
