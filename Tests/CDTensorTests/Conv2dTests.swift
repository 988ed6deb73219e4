import Foundation
import Testing
@testable import CDTensor

@Suite struct Conv2dTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let name: String, input: [Int], weight: [Int], parameters: Conv2dParameters
        var columnBudget = Conv2dGeometry.defaultColumnBudget
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "3x3 s1 p1", input: [2, 7, 3, 5], weight: [4, 7, 3, 3], parameters: .init(stride: 1, padding: 1)),
        Case(name: "3x3 s2 p1", input: [2, 3, 5, 7], weight: [5, 3, 3, 3], parameters: .init(stride: 2, padding: 1)),
        Case(name: "3x3 s1 p0", input: [1, 2, 5, 4], weight: [3, 2, 3, 3], parameters: .init(stride: 1, padding: 0)),
        Case(name: "1x1", input: [2, 7, 3, 5], weight: [4, 7, 1, 1], parameters: .init()),
        Case(name: "1x1 s2", input: [1, 3, 5, 5], weight: [2, 3, 1, 1], parameters: .init(stride: 2, padding: 0)),
        Case(name: "VAE downsample (pad right/bottom, s2)", input: [2, 3, 6, 5], weight: [3, 3, 3, 3], parameters: .vaeDownsample),
        Case(name: "3x3 s2 p1 width 1", input: [1, 2, 3, 1], weight: [2, 2, 3, 3], parameters: .init(stride: 2, padding: 1)),
        // im2col in chunks of output rows: 1 row, then 2 rows with a short last chunk.
        Case(name: "3x3 s1 p1, 1-row chunks", input: [2, 3, 5, 4], weight: [2, 3, 3, 3], parameters: .init(stride: 1, padding: 1), columnBudget: 1),
        Case(name: "VAE downsample, 2-row chunks", input: [1, 2, 11, 7], weight: [3, 2, 3, 3], parameters: .vaeDownsample, columnBudget: 2 * 18 * 3),
    ]

    @Test(arguments: cases)
    func forwardAndBackwardMatchNaive(_ c: Case) {
        var rng = SeededRandom(seed: 11)
        let x = rng.tensor(c.input), w = rng.tensor(c.weight), b = rng.tensor([c.weight[0]])
        let g = Conv2dGeometry(input: c.input, weight: c.weight, parameters: c.parameters, columnBudget: c.columnBudget)
        let fast = Tensor(zeros: g.outputShape), ref = Tensor(zeros: g.outputShape)
        conv2dForward(x: x, weight: w, bias: b, out: fast, parameters: c.parameters, columnBudget: c.columnBudget)
        conv2dForwardNaive(x: x, weight: w, bias: b, out: ref, parameters: c.parameters)
        expectClose(fast, ref, "conv \(c.name) forward")

        let dy = rng.tensor(g.outputShape)
        let dx = Tensor(zeros: c.input), dw = Tensor(zeros: c.weight), db = Tensor(zeros: [c.weight[0]])
        let dxN = Tensor(zeros: c.input), dwN = Tensor(zeros: c.weight), dbN = Tensor(zeros: [c.weight[0]])
        conv2dBackward(x: x, weight: w, dOut: dy, dx: dx, dWeight: dw, dBias: db, parameters: c.parameters, columnBudget: c.columnBudget)
        conv2dBackwardNaive(x: x, weight: w, dOut: dy, dx: dxN, dWeight: dwN, dBias: dbN, parameters: c.parameters)
        expectClose(dx, dxN, "conv \(c.name) dx"); expectClose(dw, dwN, "conv \(c.name) dW"); expectClose(db, dbN, "conv \(c.name) db")

        let loss = { conv2dForward(x: x, weight: w, bias: b, out: fast, parameters: c.parameters); return projection(fast, dy) }
        expectGradient("conv \(c.name) dx", param: x, analytic: dx, loss: loss)
        expectGradient("conv \(c.name) dW", param: w, analytic: dw, loss: loss)
        expectGradient("conv \(c.name) db", param: b, analytic: db, loss: loss)
    }

    /// Output planes of 64×64 and more run on oneDNN's direct kernels (blocked layouts, reorders
    /// around them); the input gradient adds into dx like the im2col path.
    static let largePlanes: [Case] = [
        Case(name: "3x3 s1 p1, 66x64", input: [2, 5, 64, 66], weight: [6, 5, 3, 3], parameters: .init(stride: 1, padding: 1)),
        Case(name: "VAE downsample 130x128", input: [1, 4, 130, 128], weight: [3, 4, 3, 3], parameters: .vaeDownsample),
        Case(name: "conv_in, 3 channels", input: [1, 3, 64, 64], weight: [16, 3, 3, 3], parameters: .init(stride: 1, padding: 1)),
    ]

    @Test(arguments: largePlanes)
    func largePlanesRunOnOneDNNAndMatchNaive(_ c: Case) {
        var rng = SeededRandom(seed: 13)
        let x = rng.tensor(c.input), w = rng.tensor(c.weight), b = rng.tensor([c.weight[0]])
        let g = Conv2dGeometry(input: c.input, weight: c.weight, parameters: c.parameters)
        #expect(OneDNNConvolution.applies(g))
        let fast = Tensor(zeros: g.outputShape), ref = Tensor(zeros: g.outputShape)
        #expect(OneDNNConvolution.forward(x: x, weight: w, bias: b, out: fast, g), "no direct kernel for \(c.name)")
        conv2dForwardNaive(x: x, weight: w, bias: b, out: ref, parameters: c.parameters)
        expectClose(fast, ref, "oneDNN conv \(c.name) forward")
        fast.zero()
        conv2dForward(x: x, weight: w, bias: nil, out: fast, parameters: c.parameters)
        conv2dForwardNaive(x: x, weight: w, bias: nil, out: ref, parameters: c.parameters)
        expectClose(fast, ref, "conv2dForward \(c.name) without bias")

        let dy = rng.tensor(g.outputShape), start = rng.tensor(c.input)
        let dx = start.copy(), dxN = start.copy(), dw = Tensor(zeros: c.weight), dwN = Tensor(zeros: c.weight)
        conv2dBackward(x: x, weight: w, dOut: dy, dx: dx, dWeight: dw, dBias: nil, parameters: c.parameters)
        conv2dBackwardNaive(x: x, weight: w, dOut: dy, dx: dxN, dWeight: dwN, dBias: nil, parameters: c.parameters)
        expectClose(dx, dxN, "conv2dBackward \(c.name) dx accumulated onto a nonzero dx")
        expectClose(dw, dwN, rtol: 1e-4, atol: 1e-4, "conv2dBackward \(c.name) dW (im2col path beside oneDNN's dx)")
    }

    /// The daemon samples on one thread while it trains on another; both may run the same cached
    /// oneDNN plan at once (each call brings its own scratchpad and blocked buffers).
    @Test func oneDNNPlansRunFromTwoThreadsAtOnce() {
        var rng = SeededRandom(seed: 14)
        let shape = [1, 6, 64, 64], weightShape = [5, 6, 3, 3], p = Conv2dParameters(stride: 1, padding: 1)
        let w = rng.tensor(weightShape), b = rng.tensor([5])
        let inputs = (0..<4).map { _ in rng.tensor(shape) }
        let outs = inputs.map { _ in Tensor(zeros: [1, 5, 64, 64]) }
        DispatchQueue.concurrentPerform(iterations: inputs.count) { i in
            for _ in 0..<3 { conv2dForward(x: inputs[i], weight: w, bias: b, out: outs[i], parameters: p) }
        }
        for i in inputs.indices {
            let ref = Tensor(zeros: [1, 5, 64, 64])
            conv2dForwardNaive(x: inputs[i], weight: w, bias: b, out: ref, parameters: p)
            expectClose(outs[i], ref, "conv on thread \(i)")
        }
    }

    @Test func chunkingSplitsOutputRowsWithinTheBudget() {
        let g = Conv2dGeometry(input: [1, 2, 11, 7], weight: [3, 2, 3, 3], parameters: .vaeDownsample, columnBudget: 2 * 18 * 3)
        #expect(g.outputRowChunks == [0..<2, 2..<4, 4..<5])
        #expect(Conv2dGeometry(input: [1, 320, 64, 64], weight: [320, 320, 3, 3], parameters: .init(stride: 1, padding: 1)).outputRowChunks.count == 1)
    }

    @Test func inputGradientOnlyWhenWeightsFrozen() {
        var rng = SeededRandom(seed: 12)
        let x = rng.tensor([1, 3, 4, 4]), w = rng.tensor([2, 3, 3, 3]), dy = rng.tensor([1, 2, 4, 4])
        let dx = Tensor(zeros: x.shape), ref = Tensor(zeros: x.shape)
        conv2dBackward(x: x, weight: w, dOut: dy, dx: dx, dWeight: nil, dBias: nil, parameters: .init(stride: 1, padding: 1))
        conv2dBackwardNaive(x: x, weight: w, dOut: dy, dx: ref, dWeight: nil, dBias: nil, parameters: .init(stride: 1, padding: 1))
        expectClose(dx, ref, "conv dx with frozen weights")
    }

    @Test func outputSizesFollowPyTorch() {
        // 64x64 → 32x32 for both UNet (pad 1) and VAE (pad right/bottom) downsamplers.
        #expect(Conv2dGeometry(input: [1, 4, 64, 64], weight: [4, 4, 3, 3], parameters: .init(stride: 2, padding: 1)).outputShape == [1, 4, 32, 32])
        #expect(Conv2dGeometry(input: [1, 4, 64, 64], weight: [4, 4, 3, 3], parameters: .vaeDownsample).outputShape == [1, 4, 32, 32])
        #expect(Conv2dGeometry(input: [1, 4, 7, 7], weight: [4, 4, 3, 3], parameters: .init(stride: 2, padding: 1)).outputShape == [1, 4, 4, 4])
    }
}
