import Testing
@testable import CDTensor

@Suite struct AttentionTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let name: String, batch: Int, queries: Int, keys: Int, heads: Int, headDim: Int, causal: Bool
        var tileFloats = AttentionShape.defaultTileFloats
        var expectedTiles = 1
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "self", batch: 2, queries: 13, keys: 13, heads: 3, headDim: 5, causal: false),
        Case(name: "cross", batch: 2, queries: 11, keys: 7, heads: 2, headDim: 4, causal: false),
        Case(name: "causal", batch: 1, queries: 9, keys: 9, heads: 2, headDim: 3, causal: true),
        // Several query tiles per head (tile rows = tileFloats / keys, at least 8), last one partial.
        Case(name: "tiled, 8-row tiles", batch: 2, queries: 21, keys: 40, heads: 2, headDim: 3, causal: false, tileFloats: 64, expectedTiles: 3),
        Case(name: "tiled, causal", batch: 1, queries: 45, keys: 45, heads: 2, headDim: 2, causal: true, tileFloats: 45 * 10, expectedTiles: 5),
        // With 2+ threads the tiles of one head land in different chunks (dK/dV via slots).
        Case(name: "tiled, one head split across chunks", batch: 1, queries: 21, keys: 10, heads: 1, headDim: 3, causal: false, tileFloats: 80, expectedTiles: 3),
        Case(name: "tiled, middle head split", batch: 1, queries: 20, keys: 9, heads: 3, headDim: 2, causal: true, tileFloats: 63, expectedTiles: 3),
        Case(name: "causal, more keys than queries", batch: 2, queries: 5, keys: 9, heads: 2, headDim: 3, causal: true),
        Case(name: "default tiles, 1024 rows", batch: 1, queries: 1100, keys: 5, heads: 1, headDim: 2, causal: false, expectedTiles: 2),
    ]

    @Test(arguments: cases)
    func matchesNaive(_ c: Case) {
        var rng = SeededRandom(seed: 31)
        let w = c.heads * c.headDim
        let q = rng.tensor([c.batch, c.queries, w], -2, 2), k = rng.tensor([c.batch, c.keys, w], -2, 2)
        let v = rng.tensor([c.batch, c.keys, w])
        let out = Tensor(zeros: q.shape), ref = Tensor(zeros: q.shape)
        let lse = Tensor(zeros: [c.batch, c.heads, c.queries])
        let shape = AttentionShape(q: q, k: k, v: v, heads: c.heads, causal: c.causal, tileFloats: c.tileFloats)
        #expect(shape.blocks == c.expectedTiles, "\(c.name): \(shape.blocks) query tiles of \(shape.blockRows) rows")
        attentionForward(q: q, k: k, v: v, heads: c.heads, causal: c.causal, out: out, logSumExp: lse, tileFloats: c.tileFloats)
        attentionForwardNaive(q: q, k: k, v: v, heads: c.heads, causal: c.causal, out: ref)
        expectClose(out, ref, rtol: 1e-4, atol: 1e-5, "attention \(c.name) forward")

        let dy = rng.tensor(q.shape)
        let dq = Tensor(zeros: q.shape), dk = Tensor(zeros: k.shape), dv = Tensor(zeros: v.shape)
        let dqN = Tensor(zeros: q.shape), dkN = Tensor(zeros: k.shape), dvN = Tensor(zeros: v.shape)
        attentionBackward(q: q, k: k, v: v, heads: c.heads, causal: c.causal, out: out, logSumExp: lse, dOut: dy,
                          dq: dq, dk: dk, dv: dv, tileFloats: c.tileFloats)
        attentionBackwardNaive(q: q, k: k, v: v, heads: c.heads, causal: c.causal, dOut: dy, dq: dqN, dk: dkN, dv: dvN)
        expectClose(dq, dqN, rtol: 1e-3, atol: 1e-5, "attention \(c.name) dq")
        expectClose(dk, dkN, rtol: 1e-3, atol: 1e-5, "attention \(c.name) dk")
        expectClose(dv, dvN, rtol: 1e-3, atol: 1e-5, "attention \(c.name) dv")
    }

    @Test func backwardMatchesFiniteDifferences() {
        var rng = SeededRandom(seed: 32)
        for causal in [false, true] {
            let (b, t, s, h, d) = (1, 5, causal ? 5 : 4, 2, 3)
            let q = rng.tensor([b, t, h * d]), k = rng.tensor([b, s, h * d]), v = rng.tensor([b, s, h * d])
            let out = Tensor(zeros: q.shape), lse = Tensor(zeros: [b, h, t]), dy = rng.tensor(q.shape)
            attentionForward(q: q, k: k, v: v, heads: h, causal: causal, out: out, logSumExp: lse)
            let dq = Tensor(zeros: q.shape), dk = Tensor(zeros: k.shape), dv = Tensor(zeros: v.shape)
            attentionBackward(q: q, k: k, v: v, heads: h, causal: causal, out: out, logSumExp: lse, dOut: dy, dq: dq, dk: dk, dv: dv)
            let loss = {
                let o = Tensor(zeros: q.shape)
                attentionForward(q: q, k: k, v: v, heads: h, causal: causal, out: o, logSumExp: Tensor(zeros: [b, h, t]))
                return projection(o, dy)
            }
            expectGradient("attention dq causal=\(causal)", param: q, analytic: dq, eps: 1e-2, loss: loss)
            expectGradient("attention dk causal=\(causal)", param: k, analytic: dk, eps: 1e-2, loss: loss)
            expectGradient("attention dv causal=\(causal)", param: v, analytic: dv, eps: 1e-2, loss: loss)
        }
    }

    @Test func causalMaskIsTopLeftAlignedLikePyTorch() {
        // Uniform scores (q = 0): query i averages v over keys 0…i, as torch's is_causal does
        // (tril(ones(Tq, Tk))), even when there are more keys than queries.
        let q = Tensor(zeros: [1, 2, 1]), k = Tensor(zeros: [1, 4, 1]), v = Tensor([1, 2, 3, 4], shape: [1, 4, 1])
        let out = Tensor(zeros: q.shape)
        attentionForward(q: q, k: k, v: v, heads: 1, causal: true, out: out, logSumExp: Tensor(zeros: [1, 1, 2]))
        #expect(out.array == [1.0, 1.5])
    }

    @Test func nanInputsStayVisible() {
        let q = Tensor([.nan, .nan], shape: [1, 2, 1]), k = Tensor([1, 2], shape: [1, 2, 1]), v = Tensor([1, 2], shape: [1, 2, 1])
        let out = Tensor(zeros: q.shape)
        attentionForward(q: q, k: k, v: v, heads: 1, out: out, logSumExp: Tensor(zeros: [1, 1, 2]))
        #expect(out.array.allSatisfy { $0.isNaN }, "NaN queries gave \(out.array)")
        let x = Tensor([.nan, .nan, .nan, 1, 2, .nan], shape: [2, 3]), y = Tensor(zeros: [2, 3])
        softmaxForward(x: x, out: y)
        #expect(y.array.allSatisfy { $0.isNaN }, "softmax of NaN rows gave \(y.array)")
    }

    @Test func onlyRequestedGradientsAreWritten() {
        var rng = SeededRandom(seed: 33)
        let q = rng.tensor([1, 6, 4]), k = rng.tensor([1, 3, 4]), v = rng.tensor([1, 3, 4])
        let out = Tensor(zeros: q.shape), lse = Tensor(zeros: [1, 2, 6]), dy = rng.tensor(q.shape)
        attentionForward(q: q, k: k, v: v, heads: 2, out: out, logSumExp: lse)
        let dv = Tensor(zeros: v.shape), ref = Tensor(zeros: v.shape)
        attentionBackward(q: q, k: k, v: v, heads: 2, out: out, logSumExp: lse, dOut: dy, dq: nil, dk: nil, dv: dv)
        attentionBackwardNaive(q: q, k: k, v: v, heads: 2, dOut: dy, dq: nil, dk: nil, dv: ref)
        expectClose(dv, ref, rtol: 1e-4, atol: 1e-6, "attention dv alone")
    }
}
