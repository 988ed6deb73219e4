import Foundation
import Testing
@testable import CDTensor

/// `ComputePrecision.bf16`: convolutions and frozen-weight linear products on oneDNN's bf16 kernels,
/// inputs and weights rounded to bf16 (8 significant bits, so each product is off by at most 2⁻⁷
/// relative), accumulated in fp32.
@Suite(.enabled(if: ComputePrecision.bf16Supported, "bf16 compute needs a CPU with AVX512_BF16"))
struct BF16ComputeTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let name: String, input: [Int], weight: [Int], parameters: Conv2dParameters
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "3x3 s1 p1, 32 channels on 16x16", input: [2, 32, 16, 16], weight: [32, 32, 3, 3], parameters: .init(stride: 1, padding: 1)),
        Case(name: "3x3 s2 p1 (downsample)", input: [1, 32, 16, 16], weight: [64, 32, 3, 3], parameters: .init(stride: 2, padding: 1)),
        Case(name: "1x1 (shortcut)", input: [1, 64, 8, 8], weight: [32, 64, 1, 1], parameters: .init()),
        Case(name: "3x3 on a 64x64 plane", input: [1, 16, 64, 64], weight: [16, 16, 3, 3], parameters: .init(stride: 1, padding: 1)),
        Case(name: "VAE downsample", input: [1, 16, 34, 34], weight: [16, 16, 3, 3], parameters: .vaeDownsample),
        Case(name: "3 input channels (conv_in)", input: [1, 3, 32, 32], weight: [16, 3, 3, 3], parameters: .init(stride: 1, padding: 1)),
    ]

    /// |a − b| ≤ 2⁻⁶ · bound + 1e-5 everywhere, bound = the same convolution of |inputs| (Σ|x·w|).
    func expectWithinRounding(_ a: Tensor, _ b: Tensor, bound: Tensor, _ what: String,
                              sourceLocation: SourceLocation = #_sourceLocation) {
        var worst: (excess: Float, index: Int) = (-.infinity, 0)
        for i in 0..<a.count {
            let excess = abs(a.pointer[i] - b.pointer[i]) - (bound.pointer[i] / 64 + 1e-5)
            if !(excess <= worst.excess) { worst = (excess, i) }
        }
        #expect(worst.excess <= 0, "\(what): at \(worst.index) \(a.pointer[worst.index]) vs \(b.pointer[worst.index]), allowed \(bound.pointer[worst.index] / 64 + 1e-5)",
                sourceLocation: sourceLocation)
    }

    func magnitude(_ t: Tensor) -> Tensor { Tensor(t.array.map(abs), shape: t.shape) }

    @Test(arguments: cases)
    func forwardAndInputGradientWithinBF16Rounding(_ c: Case) {
        var rng = SeededRandom(seed: 41)
        let x = rng.tensor(c.input), w = rng.tensor(c.weight), b = rng.tensor([c.weight[0]])
        let g = Conv2dGeometry(input: c.input, weight: c.weight, parameters: c.parameters)
        let out = Tensor(zeros: g.outputShape), ref = Tensor(zeros: g.outputShape), bound = Tensor(zeros: g.outputShape)
        ComputePrecision.$scoped.withValue(.bf16) {
            conv2dForward(x: x, weight: w, bias: b, out: out, parameters: c.parameters)
        }
        conv2dForwardNaive(x: x, weight: w, bias: b, out: ref, parameters: c.parameters)
        conv2dForwardNaive(x: magnitude(x), weight: magnitude(w), bias: nil, out: bound, parameters: c.parameters)
        expectWithinRounding(out, ref, bound: bound, "bf16 conv \(c.name) forward")

        let dy = rng.tensor(g.outputShape), start = rng.tensor(c.input)
        let dx = start.copy(), dxN = start.copy(), dxBound = Tensor(zeros: c.input)
        ComputePrecision.$scoped.withValue(.bf16) {
            conv2dBackward(x: x, weight: w, dOut: dy, dx: dx, dWeight: nil, dBias: nil, parameters: c.parameters)
        }
        conv2dBackwardNaive(x: x, weight: w, dOut: dy, dx: dxN, dWeight: nil, dBias: nil, parameters: c.parameters)
        conv2dBackwardNaive(x: x, weight: magnitude(w), dOut: magnitude(dy), dx: dxBound, dWeight: nil, dBias: nil, parameters: c.parameters)
        expectWithinRounding(dx, dxN, bound: dxBound, "bf16 conv \(c.name) dx accumulated onto a nonzero dx")
    }

    /// The bf16 kernels really run (the result is not fp32's), and a frozen weight's cached bf16
    /// copy serves later calls while a weight that is not frozen is converted again each call.
    @Test func frozenWeightsAreConvertedOnceOthersEveryCall() {
        var rng = SeededRandom(seed: 42)
        let p = Conv2dParameters(stride: 1, padding: 1)
        let x = rng.tensor([1, 32, 16, 16]), w = rng.tensor([32, 32, 3, 3])
        let fp32 = Tensor(zeros: [1, 32, 16, 16]), first = Tensor(zeros: [1, 32, 16, 16]), again = Tensor(zeros: [1, 32, 16, 16])
        conv2dForward(x: x, weight: w, bias: nil, out: fp32, parameters: p)
        ComputePrecision.$scoped.withValue(.bf16) { conv2dForward(x: x, weight: w, bias: nil, out: first, parameters: p) }
        let differs = zip(first.array, fp32.array).contains { $0 != $1 }
        #expect(differs, "bf16 convolution gave fp32's result bit for bit: the bf16 kernel did not run")

        // Not frozen: doubling the weight doubles the output (bf16 rounding commutes with × 2).
        for i in 0..<w.count { w.pointer[i] *= 2 }
        ComputePrecision.$scoped.withValue(.bf16) { conv2dForward(x: x, weight: w, bias: nil, out: again, parameters: p) }
        #expect(again.array == first.array.map { $0 * 2 }, "a weight that is not frozen was served from a stale copy")

        // Frozen: the first call converts and keeps the copy; the next calls use it, same result.
        let frozen = w.copy()
        frozen.storage.freeze()
        let viaCache = Tensor(zeros: [1, 32, 16, 16]), cached = Tensor(zeros: [1, 32, 16, 16])
        ComputePrecision.$scoped.withValue(.bf16) {
            conv2dForward(x: x, weight: frozen, bias: nil, out: viaCache, parameters: p)
            conv2dForward(x: x, weight: frozen, bias: nil, out: cached, parameters: p)
        }
        #expect(viaCache.array == again.array && cached.array == again.array, "frozen weight: results of the converting and the cached call differ")
        #expect(FrozenWeightCache.shared.copies(of: frozen) == 1, "the second call made another copy")
        #expect(FrozenWeightCache.shared.copies(of: w) == 0, "a weight that is not frozen was kept")
    }

    /// Linear layers: y = x·Wᵀ and dx += dy·W in bf16 for a frozen W; dW (a trained weight's
    /// gradient) and every product with a weight that is not frozen stay fp32.
    @Test func linearWithAFrozenWeightRunsInBF16() {
        var rng = SeededRandom(seed: 43)
        let (m, k, n) = (70, 48, 40)
        let x = rng.tensor([m, k]), frozen = rng.tensor([n, k]), b = rng.tensor([n]), dy = rng.tensor([m, n])
        frozen.storage.freeze()
        let trained = frozen.copy()  // same values, not frozen
        let y = Tensor(zeros: [m, n]), ref = Tensor(zeros: [m, n]), bound = Tensor(zeros: [m, n])
        ComputePrecision.$scoped.withValue(.bf16) { linearForward(x: x, weight: frozen, bias: b, out: y) }
        linearForwardNaive(x: x, weight: frozen, bias: b, out: ref)
        linearForwardNaive(x: magnitude(x), weight: magnitude(frozen), bias: nil, out: bound)
        expectWithinRounding(y, ref, bound: bound, "bf16 linear forward")
        #expect(zip(y.array, ref.array).contains { abs($0 - $1) > 1e-4 }, "bf16 linear gave fp32's result: its kernel did not run")

        let start = rng.tensor([m, k])
        let dx = start.copy(), dxN = start.copy(), dxBound = Tensor(zeros: [m, k])
        let dw = Tensor(zeros: [n, k]), dwN = Tensor(zeros: [n, k])
        ComputePrecision.$scoped.withValue(.bf16) {
            linearBackward(x: x, weight: frozen, dOut: dy, dx: dx, dWeight: dw, dBias: nil)
        }
        linearBackwardNaive(x: x, weight: frozen, dOut: dy, dx: dxN, dWeight: dwN, dBias: nil)
        linearBackwardNaive(x: x, weight: magnitude(frozen), dOut: magnitude(dy), dx: dxBound, dWeight: nil, dBias: nil)
        expectWithinRounding(dx, dxN, bound: dxBound, "bf16 linear dx accumulated onto a nonzero dx")
        expectClose(dw, dwN, rtol: 1e-4, atol: 1e-5, "dW stays fp32")

        #expect(FrozenWeightCache.shared.copies(of: frozen) == 1, "forward and dx share one bf16 copy of the weight")
        #expect(FrozenWeightCache.shared.copies(of: trained) == 0)

        let fp32 = Tensor(zeros: [m, n]), notFrozen = Tensor(zeros: [m, n])
        linearForward(x: x, weight: trained, bias: b, out: fp32)
        ComputePrecision.$scoped.withValue(.bf16) { linearForward(x: x, weight: trained, bias: b, out: notFrozen) }
        #expect(notFrozen.array == fp32.array, "a weight that is not frozen was multiplied in bf16")
    }

    /// The daemon samples on one thread while it trains on another: four threads making and using
    /// the bf16 copies of the same frozen weights at once get the results of calls made one at a
    /// time, and one copy per weight and layout is kept.
    @Test func threadsShareTheBF16Copies() {
        var rng = SeededRandom(seed: 44)
        let p = Conv2dParameters(stride: 1, padding: 1)
        let w = rng.tensor([32, 32, 3, 3]), lw = rng.tensor([48, 32])
        w.storage.freeze(); lw.storage.freeze()
        let inputs = (0..<4).map { _ in rng.tensor([1, 32, 16, 16]) }
        let convs = inputs.map { _ in Tensor(zeros: [1, 32, 16, 16]) }, lins = inputs.map { _ in Tensor(zeros: [256, 48]) }
        DispatchQueue.concurrentPerform(iterations: inputs.count) { i in
            ComputePrecision.$scoped.withValue(.bf16) {
                conv2dForward(x: inputs[i], weight: w, bias: nil, out: convs[i], parameters: p)
                linearForward(x: inputs[i].reshaped([256, 32]), weight: lw, bias: nil, out: lins[i])
            }
        }
        for i in inputs.indices {
            let conv = Tensor(zeros: [1, 32, 16, 16]), lin = Tensor(zeros: [256, 48])
            ComputePrecision.$scoped.withValue(.bf16) {
                conv2dForward(x: inputs[i], weight: w, bias: nil, out: conv, parameters: p)
                linearForward(x: inputs[i].reshaped([256, 32]), weight: lw, bias: nil, out: lin)
            }
            // Not bit for bit: a call made while another thread holds the pool runs on one thread.
            expectClose(convs[i], conv, "conv on thread \(i)")
            expectClose(lins[i], lin, "linear on thread \(i)")
        }
        #expect(FrozenWeightCache.shared.copies(of: w) == 1 && FrozenWeightCache.shared.copies(of: lw) == 1)
    }
}
