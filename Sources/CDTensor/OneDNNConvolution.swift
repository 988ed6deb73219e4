#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CDNNL

/// Convolutions on oneDNN's direct (JIT) kernels, for geometries with a large output plane.
///
/// im2col writes KH·KW copies of the input, which costs more than the GEMM itself when the channels
/// are few and the plane large (the VAE's 128 channels at 512×512 ran at 77 GFLOP/s). oneDNN's
/// direct kernels need their blocked layouts (e.g. nChw16c activations, OIhw16i16o weights), so
/// each call reorders x and W into scratch and the result back to NCHW. In fp32 the weight reorder
/// is paid per call (fp32 copies of the frozen weights would double their memory) and costs about
/// one read and write of W against 2·OH·OW multiply-adds per weight, so the path is used only where
/// the output plane has at least `minimumPlane` positions (UNet level 0, the VAE's upper levels).
/// Primitives are created once per geometry and kept. Any geometry oneDNN only offers a reference
/// or GEMM-based kernel for stays on im2col + GEMM.
///
/// With `ComputePrecision.bf16` every convolution comes here first: x (or dy) and W are reordered
/// to bf16 blocked layouts, the kernel accumulates in fp32 and writes fp32. The forward pass keeps
/// the bf16 blocked copy of a frozen weight (`TensorStorage.isFrozen`, `FrozenWeightCache`): at the UNet's
/// lower levels (1280 channels on 16×16 and 8×8 planes) a per-call weight reorder costs about as
/// much as the bf16 convolution. The input-gradient pass reorders per call (caching it too measured
/// no faster at 512 px and would hold another bf16 copy of every weight).
enum OneDNNConvolution {
    /// 64×64 output positions: the weight reorder is then about 1/4000 of the multiply-adds.
    static let minimumPlane = 4096

    enum Pass: Hashable { case forward, backwardData }

    struct Key: Hashable {
        let dims: [Int]  // N, C, H, W, O, KH, KW, stride, pads (top, left, bottom, right)
        let pass: Pass
        let bias: Bool
        /// oneDNN's direct kernels split their work for the thread count at creation.
        let threads: Int
        let bf16: Bool
    }

    static func applies(_ g: Conv2dGeometry) -> Bool {
        g.outHeight * g.outWidth >= minimumPlane && !g.isPointwise
    }

    /// y = conv(x, W) + b via oneDNN; false when this path does not apply (fp32 and a small plane)
    /// or no direct kernel exists for this geometry.
    static func forward(x: Tensor, weight: Tensor, bias: Tensor?, out: Tensor, _ g: Conv2dGeometry) -> Bool {
        run(g, .forward, bias: bias != nil) { plan in
            plan.run(input: x.pointer, weight: weight, bias: bias?.pointer, output: out.pointer)
        }
    }

    /// dx += convᵀ(dy, W) via oneDNN; false as for `forward`.
    static func backwardData(dOut: Tensor, weight: Tensor, dx: Tensor, _ g: Conv2dGeometry) -> Bool {
        run(g, .backwardData, bias: false) { plan in
            plan.run(input: dOut.pointer, weight: weight, bias: nil, output: dx.pointer)
        }
    }

    /// bf16 for every geometry when selected (fp32 oneDNN or im2col where oneDNN has no bf16 kernel
    /// for it), else fp32 for planes of `minimumPlane` and more.
    private static func run(_ g: Conv2dGeometry, _ pass: Pass, bias: Bool, _ body: (Plan) -> Void) -> Bool {
        let bf16 = ComputePrecision.current == .bf16
        guard bf16 || applies(g) else { return false }
        return OneDNN.withThreads { threads in
            let chosen = (bf16 ? plan(g, pass, bias: bias, threads: threads, bf16: true) : nil)
                ?? (applies(g) ? plan(g, pass, bias: bias, threads: threads, bf16: false) : nil)
            guard let chosen else { return false }
            body(chosen)
            return true
        }
    }

    private static let plans = OneDNN.PlanCache<Key, Plan>()

    /// Called with the calling thread's OpenMP count already set to `threads` (`OneDNN.withThreads`),
    /// which the plan's kernels are created for.
    private static func plan(_ g: Conv2dGeometry, _ pass: Pass, bias: Bool, threads: Int, bf16: Bool) -> Plan? {
        let p = g.parameters
        let key = Key(dims: [g.batch, g.inChannels, g.height, g.width, g.outChannels, g.kernelH, g.kernelW,
                             p.stride, p.padTop, p.padLeft, p.padBottom, p.padRight], pass: pass, bias: bias, threads: threads,
                      bf16: bf16)
        return plans.plan(key) { OneDNN.engine.flatMap { Plan(g, pass, bias: bias, bf16: bf16, engine: $0) } }
    }

    /// One primitive with the reorders around it. For `.forward` input = x, output = y (written);
    /// for `.backwardData` input = dy, output = dx (accumulated: the reorder back adds into it).
    final class Plan: @unchecked Sendable {
        let engine: dnnl_engine_t
        let pass: Pass
        let bf16: Bool
        var userInput = dnnl_memory_desc_t(), userWeight = dnnl_memory_desc_t(), userOutput = dnnl_memory_desc_t()
        var biasDesc = dnnl_memory_desc_t()
        var input = dnnl_memory_desc_t(), weight = dnnl_memory_desc_t(), output = dnnl_memory_desc_t()
        var convolution: OneDNN.Step?, inputReorder: OneDNN.Step?, weightReorder: OneDNN.Step?, outputReorder: OneDNN.Step?

        /// With `bf16`, the convolution reads x (forward) or dy (backward) and W as bf16 and writes
        /// fp32; the user's tensors stay fp32 and the reorders convert.
        init?(_ g: Conv2dGeometry, _ pass: Pass, bias: Bool, bf16: Bool, engine: dnnl_engine_t) {
            self.engine = engine
            self.pass = pass
            self.bf16 = bf16
            let p = g.parameters
            let low = bf16 ? dnnl_bf16 : dnnl_f32
            var x = dnnl_memory_desc_t(), w = dnnl_memory_desc_t(), y = dnnl_memory_desc_t()
            var anyX = dnnl_memory_desc_t(), anyW = dnnl_memory_desc_t(), anyY = dnnl_memory_desc_t()
            // The backward pass: dx (fp32) and the forward hint's dy (as dy).
            var anyDX = dnnl_memory_desc_t(), anyLowY = dnnl_memory_desc_t()
            let xDims = [g.batch, g.inChannels, g.height, g.width].map(Int64.init)
            let wDims = [g.outChannels, g.inChannels, g.kernelH, g.kernelW].map(Int64.init)
            let yDims = [g.batch, g.outChannels, g.outHeight, g.outWidth].map(Int64.init)
            guard describe(&x, xDims, dnnl_nchw), describe(&w, wDims, dnnl_oihw), describe(&y, yDims, dnnl_nchw),
                  describe(&anyX, xDims, dnnl_format_tag_any, low), describe(&anyW, wDims, dnnl_format_tag_any, low),
                  describe(&anyY, yDims, dnnl_format_tag_any), describe(&biasDesc, [Int64(g.outChannels)], dnnl_a),
                  describe(&anyDX, xDims, dnnl_format_tag_any), describe(&anyLowY, yDims, dnnl_format_tag_any, low)
            else { return nil }
            let strides = [Int64(p.stride), Int64(p.stride)]
            let padL = [Int64(p.padTop), Int64(p.padLeft)], padR = [Int64(p.padBottom), Int64(p.padRight)]

            // The forward descriptor is also the backward pass's hint (there with dy's type).
            var fd = dnnl_convolution_desc_t()
            let prop = pass == .forward ? dnnl_forward_inference : dnnl_forward_training
            let described = bias
                ? dnnl_convolution_forward_desc_init(&fd, prop, dnnl_convolution_direct, &anyX, &anyW, &biasDesc, &anyY, strides, padL, padR)
                : pass == .forward
                ? dnnl_convolution_forward_desc_init(&fd, prop, dnnl_convolution_direct, &anyX, &anyW, nil, &anyY, strides, padL, padR)
                : dnnl_convolution_forward_desc_init(&fd, prop, dnnl_convolution_direct, &anyX, &anyW, nil, &anyLowY, strides, padL, padR)
            guard described == dnnl_success else { return nil }
            guard let attr = OneDNN.attributes(accumulate: false) else { return nil }
            defer { dnnl_primitive_attr_destroy(attr) }
            var forwardPD: dnnl_primitive_desc_t?
            guard dnnl_primitive_desc_create(&forwardPD, &fd, pass == .forward ? attr : nil, engine, nil) == dnnl_success,
                  let forwardPD else { return nil }
            defer { dnnl_primitive_desc_destroy(forwardPD) }
            var pd = forwardPD
            var backwardPD: dnnl_primitive_desc_t?
            defer { if let backwardPD { dnnl_primitive_desc_destroy(backwardPD) } }
            if pass == .backwardData {
                var bd = dnnl_convolution_desc_t()
                guard dnnl_convolution_backward_data_desc_init(&bd, dnnl_convolution_direct, &anyDX, &anyW, &anyLowY,
                                                               strides, padL, padR) == dnnl_success,
                      dnnl_primitive_desc_create(&backwardPD, &bd, attr, engine, forwardPD) == dnnl_success,
                      let backwardPD else { return nil }
                pd = backwardPD
            }
            guard OneDNN.isJIT(pd) else { return nil }
            let inQuery = pass == .forward ? dnnl_query_src_md : dnnl_query_diff_dst_md
            let outQuery = pass == .forward ? dnnl_query_dst_md : dnnl_query_diff_src_md
            guard let inMD = dnnl_primitive_desc_query_md(pd, inQuery, 0),
                  let wMD = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0),
                  let outMD = dnnl_primitive_desc_query_md(pd, outQuery, 0) else { return nil }
            input = inMD.pointee; weight = wMD.pointee; output = outMD.pointee
            userInput = pass == .forward ? x : y
            userWeight = w
            userOutput = pass == .forward ? y : x
            convolution = OneDNN.Step(pd)
            inputReorder = OneDNN.reorder(&userInput, &input, accumulate: false, engine)
            weightReorder = OneDNN.reorder(&userWeight, &weight, accumulate: false, engine)
            outputReorder = OneDNN.reorder(&output, &userOutput, accumulate: pass == .backwardData, engine)
            guard convolution != nil, inputReorder != nil, weightReorder != nil, outputReorder != nil else { return nil }
        }

        deinit {
            for step in [convolution, inputReorder, weightReorder, outputReorder] {
                if let step { dnnl_primitive_destroy(step.primitive) }
            }
        }

        /// Runs with the calling thread's OpenMP count set to the plan's (`OneDNN.withThreads`).
        func run(input x: UnsafeMutablePointer<Float>, weight weightTensor: Tensor,
                 bias b: UnsafeMutablePointer<Float>?, output y: UnsafeMutablePointer<Float>) {
            // Copies: several threads may run the same plan (training and sampling), and the C calls
            // take the descriptors by pointer.
            var (ux, uw, uy, bd) = (userInput, userWeight, userOutput, biasDesc)
            var (bx, bw, by) = (input, weight, output)
            Scratch.with { arena in
                let call = OneDNN.Call(engine: engine, arena: arena, arenaBudget: Conv2dGeometry.defaultColumnBudget)
                defer { call.close() }
                let cached = bf16 && pass == .forward && weightTensor.storage.isFrozen
                    ? FrozenWeightCache.shared.entry(for: weightTensor, layout: bw) : nil
                let userX = call.memory(&ux, x), userW = call.memory(&uw, weightTensor.pointer), userY = call.memory(&uy, y)
                let blockedX = call.memory(&bx, call.buffer(&bx)), blockedW = call.memory(&bw, cached?.data ?? call.buffer(&bw))
                let blockedY = call.memory(&by, call.buffer(&by))
                let biasMemory = b.map { call.memory(&bd, $0) }
                call.reserveScratchpad(for: [inputReorder!, weightReorder!, convolution!, outputReorder!])
                call.execute(inputReorder!, [(DNNLArg.from, userX), (DNNLArg.to, blockedX)])
                if cached?.filled != true { call.execute(weightReorder!, [(DNNLArg.from, userW), (DNNLArg.to, blockedW)]) }
                if pass == .forward {
                    var args = [(DNNLArg.src, blockedX), (DNNLArg.weights, blockedW), (DNNLArg.dst, blockedY)]
                    if let biasMemory { args.append((DNNLArg.bias, biasMemory)) }
                    call.execute(convolution!, args)
                } else {
                    call.execute(convolution!, [(DNNLArg.diffDst, blockedX), (DNNLArg.weights, blockedW), (DNNLArg.diffSrc, blockedY)])
                }
                call.execute(outputReorder!, [(DNNLArg.from, blockedY), (DNNLArg.to, userY)])
                if let cached, !cached.filled {
                    call.wait()  // the copy is complete once the stream is done
                    FrozenWeightCache.shared.store(cached, for: weightTensor, layout: bw)
                }
            }
        }
    }
}
