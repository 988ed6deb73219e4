import Foundation
import Testing
@testable import CDTensor

@Suite struct SmallKernelTests {
    @Test func upsampleMatchesNaiveAndIsAdjoint() {
        var rng = SeededRandom(seed: 51)
        let x = rng.tensor([2, 3, 3, 5]), y = Tensor(zeros: [2, 3, 6, 10]), ref = Tensor(zeros: [2, 3, 6, 10])
        upsampleNearest2xForward(x: x, out: y)
        upsampleNearest2xForwardNaive(x: x, out: ref)
        expectClose(y, ref, rtol: 0, atol: 0, "upsample forward")
        let dy = rng.tensor(y.shape), dx = Tensor(zeros: x.shape), dxN = Tensor(zeros: x.shape)
        upsampleNearest2xBackward(dOut: dy, dx: dx)
        upsampleNearest2xBackwardNaive(dOut: dy, dx: dxN)
        expectClose(dx, dxN, "upsample backward")
        expectGradient("upsample dx", param: x, analytic: dx, loss: { upsampleNearest2xForward(x: x, out: y); return projection(y, dy) })
    }

    @Test func embeddingTrainsOnlyChosenRows() {
        var rng = SeededRandom(seed: 52)
        let table = rng.tensor([10, 4])
        let override = EmbeddingOverride(rowIds: [9, 3], rows: rng.tensor([2, 4]))
        let ids = [1, 9, 3, 9, 0, 7]
        let out = Tensor(zeros: [6, 4])
        embeddingForward(ids: ids, table: table, override: override, out: out)
        #expect(out[1].array == override.rows[0].array && out[3].array == override.rows[0].array)
        #expect(out[2].array == override.rows[1].array)
        #expect(out[0].array == table[1].array && out[5].array == table[7].array)

        let dy = rng.tensor(out.shape), dRows = Tensor(zeros: [2, 4]), ref = Tensor(zeros: [2, 4])
        embeddingBackward(ids: ids, dOut: dy, override: override, dRows: dRows)
        embeddingBackwardNaive(ids: ids, dOut: dy, override: override, dRows: ref)
        expectClose(dRows, ref, "embedding backward")
        expectGradient("embedding rows", param: override.rows, analytic: dRows, loss: {
            embeddingForward(ids: ids, table: table, override: override, out: out); return projection(out, dy)
        })
    }

    @Test func timestepEmbeddingMatchesDiffusersValues() {
        // sd-architecture-spec §3.2 test vectors (SD1.5: dim 320, flip_sin_to_cos, freq_shift 0).
        let e = timestepEmbedding(timesteps: [1, 999], dim: 320, flipSinToCos: true, freqShift: 0)
        let expected: [(Int, Int, Float)] = [(0, 0, 0.540302), (0, 1, 0.586504), (0, 2, 0.628439), (0, 159, 1.0),
                                             (0, 160, 0.841471), (0, 161, 0.809946), (0, 319, 0.000106),
                                             (1, 0, 0.99965), (1, 1, 0.802678), (1, 160, -0.026461), (1, 319, 0.105622)]
        for (row, col, value) in expected {
            #expect(abs(e.pointer[row * 320 + col] - value) < 2e-6, "emb[\(row), \(col)] = \(e.pointer[row * 320 + col]), expected \(value)")
        }
        let unflipped = timestepEmbedding(timesteps: [1], dim: 320, flipSinToCos: false, freqShift: 1)
        // sin first; with freq_shift 1 the k-th frequency is exp(-ln(1e4)·k/159).
        #expect(abs(unflipped.pointer[0] - 0.841471) < 1e-6)
        #expect(abs(unflipped.pointer[159] - sin(1e-4)) < 1e-7)
    }

    @Test func elementwiseOpsAndGradients() {
        var rng = SeededRandom(seed: 53)
        let a = rng.tensor([37]), b = rng.tensor([37]), out = Tensor(zeros: [37]), dy = rng.tensor([37])
        addForward(a, b, out: out)
        #expect((0..<37).allSatisfy { out.pointer[$0] == a.pointer[$0] + b.pointer[$0] })
        mulForward(a, b, out: out)
        #expect((0..<37).allSatisfy { out.pointer[$0] == a.pointer[$0] * b.pointer[$0] })
        let da = Tensor(zeros: [37]), db = Tensor(zeros: [37])
        mulBackward(a, b, dOut: dy, da: da, db: db)
        expectGradient("mul da", param: a, analytic: da, loss: { mulForward(a, b, out: out); return projection(out, dy) })
        expectGradient("mul db", param: b, analytic: db, loss: { mulForward(a, b, out: out); return projection(out, dy) })
        let dsum = Tensor(zeros: [37])
        addBackward(dOut: dy, da: dsum, db: nil)
        expectClose(dsum, dy, rtol: 0, atol: 0, "add backward")
        scaleForward(a, by: -2.5, out: out)
        #expect((0..<37).allSatisfy { out.pointer[$0] == -2.5 * a.pointer[$0] })
        let dx = Tensor(zeros: [37])
        scaleBackward(dOut: dy, by: -2.5, dx: dx)
        expectGradient("scale dx", param: a, analytic: dx, loss: { scaleForward(a, by: -2.5, out: out); return projection(out, dy) })

        let x = rng.tensor([2, 3, 5]), v = rng.tensor([2, 3]), y = Tensor(zeros: x.shape), g = rng.tensor(x.shape)
        addChannelBroadcastForward(x, v, out: y)
        #expect(y.pointer[5 * 4 + 2] == x.pointer[5 * 4 + 2] + v.pointer[4])
        let dv = Tensor(zeros: v.shape), dxb = Tensor(zeros: x.shape)
        addChannelBroadcastBackward(dOut: g, dx: dxb, dv: dv)
        let loss = { addChannelBroadcastForward(x, v, out: y); return projection(y, g) }
        expectGradient("broadcast add dv", param: v, analytic: dv, loss: loss)
        expectGradient("broadcast add dx", param: x, analytic: dxb, loss: loss)
    }

    @Test func maskedMSEFollowsDiffusersNormalization() {
        // One sample, 2 channels, 2x2, mask covering 1 pixel: ℓ = Σ_c e·m / Σ m.
        let pred = Tensor([1, 2, 3, 4, 5, 6, 7, 8], shape: [1, 2, 2, 2])
        let target = Tensor(zeros: [1, 2, 2, 2])
        let mask = Tensor([0, 1, 0, 0], shape: [1, 1, 2, 2])
        let losses = Tensor(zeros: [1])
        maskedMSEForward(pred: pred, target: target, mask: mask, normalization: .maskSum, losses: losses)
        #expect(losses.pointer[0] == (4 + 36) / 1)
        maskedMSEForward(pred: pred, target: target, mask: nil, normalization: .mean, losses: losses)
        #expect(abs(losses.pointer[0] - 204.0 / 8) < 1e-5)
        // No mask with maskSum: all ones, so C × the mean (diffusers' instance loss).
        maskedMSEForward(pred: pred, target: target, mask: nil, normalization: .maskSum, losses: losses)
        #expect(abs(losses.pointer[0] - 204.0 / 4) < 1e-5)

        var rng = SeededRandom(seed: 54)
        let p = rng.tensor([3, 4, 3, 3]), t = rng.tensor([3, 4, 3, 3])
        let m = Tensor((0..<27).map { Float(($0 * 7) % 3 == 0 ? 1 : 0) }, shape: [3, 1, 3, 3])
        let weights: [Float] = [0.5, 0.5, 1]
        for norm in [MSENormalization.maskSum, .mean] {
            let dp = Tensor(zeros: p.shape)
            maskedMSEBackward(pred: p, target: t, mask: m, normalization: norm, weights: weights, dPred: dp)
            let l = Tensor(zeros: [3])
            expectGradient("masked MSE \(norm)", param: p, analytic: dp, eps: 1e-3, loss: {
                maskedMSEForward(pred: p, target: t, mask: m, normalization: norm, losses: l)
                return zip(l.array, weights).reduce(0) { $0 + Double($1.0 * $1.1) }
            })
        }
    }
}

@Suite struct LayoutTests {
    @Test func transposeAndConcatRoundTripWithGradients() {
        var rng = SeededRandom(seed: 71)
        let x = rng.tensor([2, 37, 45]), y = Tensor(zeros: [2, 45, 37])
        transposeForward(x, rows: 37, cols: 45, out: y)
        #expect((0..<2).allSatisfy { b in (0..<37).allSatisfy { i in (0..<45).allSatisfy { j in
            y.pointer[(b * 45 + j) * 37 + i] == x.pointer[(b * 37 + i) * 45 + j] } } })
        let dy = rng.tensor(y.shape), dx = Tensor(zeros: x.shape)
        transposeBackward(dOut: dy, rows: 37, cols: 45, dx: dx)
        expectGradient("transpose dx", param: x, analytic: dx, loss: { transposeForward(x, rows: 37, cols: 45, out: y); return projection(y, dy) })

        let a = rng.tensor([2, 3, 2, 2]), c = rng.tensor([2, 5, 2, 2]), out = Tensor(zeros: [2, 8, 2, 2])
        concatChannelsForward(a, c, out: out)
        #expect(out[1].array == a[1].array + c[1].array)
        let dOut = rng.tensor(out.shape), da = Tensor(zeros: a.shape), dc = Tensor(zeros: c.shape)
        concatChannelsBackward(dOut: dOut, da: da, dc: dc, firstCount: 12, secondCount: 20)
        let loss = { concatChannelsForward(a, c, out: out); return projection(out, dOut) }
        expectGradient("concat da", param: a, analytic: da, loss: loss)
        expectGradient("concat dc", param: c, analytic: dc, loss: loss)
    }
}
