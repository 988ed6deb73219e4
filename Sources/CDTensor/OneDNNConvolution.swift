#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CDNNL
import Synchronization

/// Convolutions on oneDNN's direct (JIT) kernels, for geometries with a large output plane.
///
/// im2col writes KH·KW copies of the input, which costs more than the GEMM itself when the channels
/// are few and the plane large (the VAE's 128 channels at 512×512 ran at 77 GFLOP/s). oneDNN's
/// direct kernels need their blocked layouts (e.g. nChw16c activations, OIhw16i16o weights), so
/// each call reorders x and W into scratch and the result back to NCHW. The weight reorder is
/// paid per call (frozen weights are not cached: that would double their memory) and costs about
/// one read and write of W against 2·OH·OW multiply-adds per weight, so the path is used only where
/// the output plane has at least `minimumPlane` positions (UNet level 0, the VAE's upper levels).
/// Primitives are created once per geometry and kept. Any geometry oneDNN only offers a reference
/// or GEMM-based kernel for stays on im2col + GEMM.
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
    }

    static func applies(_ g: Conv2dGeometry) -> Bool {
        g.outHeight * g.outWidth >= minimumPlane && !g.isPointwise
    }

    /// y = conv(x, W) + b via oneDNN; false when no direct kernel exists for this geometry.
    static func forward(x: Tensor, weight: Tensor, bias: Tensor?, out: Tensor, _ g: Conv2dGeometry) -> Bool {
        OneDNN.withThreads { threads in
            guard let plan = plan(g, .forward, bias: bias != nil, threads: threads) else { return false }
            plan.run(input: x.pointer, weight: weight.pointer, bias: bias?.pointer, output: out.pointer)
            return true
        }
    }

    /// dx += convᵀ(dy, W) via oneDNN; false when no direct kernel exists for this geometry.
    static func backwardData(dOut: Tensor, weight: Tensor, dx: Tensor, _ g: Conv2dGeometry) -> Bool {
        OneDNN.withThreads { threads in
            guard let plan = plan(g, .backwardData, bias: false, threads: threads) else { return false }
            plan.run(input: dOut.pointer, weight: weight.pointer, bias: nil, output: dx.pointer)
            return true
        }
    }

    /// oneDNN engines may be used from any thread.
    nonisolated(unsafe) private static let engine: dnnl_engine_t? = {
        var e: dnnl_engine_t?
        return dnnl_engine_create(&e, dnnl_cpu, 0) == dnnl_success ? e : nil
    }()

    /// nil entries: geometries oneDNN has no direct kernel for (asked once). Emptied when it reaches
    /// `maximumPlans` (a daemon sampling at many sizes); plans in use stay alive with their callers.
    private static let plans = Mutex<[Key: Plan?]>([:])
    static let maximumPlans = 256

    /// Called with the calling thread's OpenMP count already set to `threads` (`OneDNN.withThreads`),
    /// which the plan's kernels are created for.
    private static func plan(_ g: Conv2dGeometry, _ pass: Pass, bias: Bool, threads: Int) -> Plan? {
        let p = g.parameters
        let key = Key(dims: [g.batch, g.inChannels, g.height, g.width, g.outChannels, g.kernelH, g.kernelW,
                             p.stride, p.padTop, p.padLeft, p.padBottom, p.padRight], pass: pass, bias: bias, threads: threads)
        if let known = plans.withLock({ $0[key] }) { return known }
        // Created outside the lock (JIT compilation takes milliseconds); a thread that raced us
        // may have inserted its own, which is just as good.
        let made = engine.flatMap { Plan(g, pass, bias: bias, engine: $0) }
        plans.withLock { cache in
            if cache.count >= maximumPlans { cache.removeAll() }
            cache[key] = .some(made)
        }
        return made
    }

    /// One primitive with the reorders around it. For `.forward` input = x, output = y (written);
    /// for `.backwardData` input = dy, output = dx (accumulated: the reorder back adds into it).
    final class Plan: @unchecked Sendable {
        let engine: dnnl_engine_t
        let pass: Pass
        var userInput = dnnl_memory_desc_t(), userWeight = dnnl_memory_desc_t(), userOutput = dnnl_memory_desc_t()
        var biasDesc = dnnl_memory_desc_t()
        var input = dnnl_memory_desc_t(), weight = dnnl_memory_desc_t(), output = dnnl_memory_desc_t()
        var convolution: Step?, inputReorder: Step?, weightReorder: Step?, outputReorder: Step?

        /// A primitive and the scratchpad one execution needs. The scratchpad is ours (oneDNN's own
        /// belongs to the primitive), so two threads may run the same plan at once: training and
        /// sampling in the daemon.
        struct Step {
            let primitive: dnnl_primitive_t
            let scratchpad: dnnl_memory_desc_t

            init?(_ pd: dnnl_primitive_desc_t) {
                var p: dnnl_primitive_t?
                guard dnnl_primitive_create(&p, pd) == dnnl_success, let p else { return nil }
                primitive = p
                // A zero descriptor (size 0) when the primitive needs none.
                scratchpad = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0)?.pointee ?? dnnl_memory_desc_t()
            }
        }

        /// Attributes with a user-managed scratchpad and, with `accumulate`, a sum post-op (the
        /// result is added to what the destination holds).
        private static func attributes(accumulate: Bool) -> dnnl_primitive_attr_t? {
            var attr: dnnl_primitive_attr_t?
            guard dnnl_primitive_attr_create(&attr) == dnnl_success, let attr else { return nil }
            var ok = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success
            if accumulate && ok {
                var ops: dnnl_post_ops_t?
                ok = dnnl_post_ops_create(&ops) == dnnl_success && dnnl_post_ops_append_sum(ops, 1) == dnnl_success
                    && dnnl_primitive_attr_set_post_ops(attr, ops) == dnnl_success
                if let ops { dnnl_post_ops_destroy(ops) }
            }
            if ok { return attr }
            dnnl_primitive_attr_destroy(attr)
            return nil
        }

        init?(_ g: Conv2dGeometry, _ pass: Pass, bias: Bool, engine: dnnl_engine_t) {
            self.engine = engine
            self.pass = pass
            let p = g.parameters
            var x = dnnl_memory_desc_t(), w = dnnl_memory_desc_t(), y = dnnl_memory_desc_t()
            var anyX = dnnl_memory_desc_t(), anyW = dnnl_memory_desc_t(), anyY = dnnl_memory_desc_t()
            let xDims = [g.batch, g.inChannels, g.height, g.width].map(Int64.init)
            let wDims = [g.outChannels, g.inChannels, g.kernelH, g.kernelW].map(Int64.init)
            let yDims = [g.batch, g.outChannels, g.outHeight, g.outWidth].map(Int64.init)
            guard describe(&x, xDims, dnnl_nchw), describe(&w, wDims, dnnl_oihw), describe(&y, yDims, dnnl_nchw),
                  describe(&anyX, xDims, dnnl_format_tag_any), describe(&anyW, wDims, dnnl_format_tag_any),
                  describe(&anyY, yDims, dnnl_format_tag_any), describe(&biasDesc, [Int64(g.outChannels)], dnnl_a)
            else { return nil }
            let strides = [Int64(p.stride), Int64(p.stride)]
            let padL = [Int64(p.padTop), Int64(p.padLeft)], padR = [Int64(p.padBottom), Int64(p.padRight)]

            // The forward descriptor is also the backward pass's hint.
            var fd = dnnl_convolution_desc_t()
            let prop = pass == .forward ? dnnl_forward_inference : dnnl_forward_training
            let described = bias
                ? dnnl_convolution_forward_desc_init(&fd, prop, dnnl_convolution_direct, &anyX, &anyW, &biasDesc, &anyY, strides, padL, padR)
                : dnnl_convolution_forward_desc_init(&fd, prop, dnnl_convolution_direct, &anyX, &anyW, nil, &anyY, strides, padL, padR)
            guard described == dnnl_success else { return nil }
            guard let attr = Self.attributes(accumulate: false) else { return nil }
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
                guard dnnl_convolution_backward_data_desc_init(&bd, dnnl_convolution_direct, &anyX, &anyW, &anyY,
                                                               strides, padL, padR) == dnnl_success,
                      dnnl_primitive_desc_create(&backwardPD, &bd, attr, engine, forwardPD) == dnnl_success,
                      let backwardPD else { return nil }
                pd = backwardPD
            }
            guard Self.isDirect(pd) else { return nil }
            let inQuery = pass == .forward ? dnnl_query_src_md : dnnl_query_diff_dst_md
            let outQuery = pass == .forward ? dnnl_query_dst_md : dnnl_query_diff_src_md
            guard let inMD = dnnl_primitive_desc_query_md(pd, inQuery, 0),
                  let wMD = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0),
                  let outMD = dnnl_primitive_desc_query_md(pd, outQuery, 0) else { return nil }
            input = inMD.pointee; weight = wMD.pointee; output = outMD.pointee
            userInput = pass == .forward ? x : y
            userWeight = w
            userOutput = pass == .forward ? y : x
            convolution = Step(pd)
            inputReorder = Self.reorder(&userInput, &input, accumulate: false, engine)
            weightReorder = Self.reorder(&userWeight, &weight, accumulate: false, engine)
            outputReorder = Self.reorder(&output, &userOutput, accumulate: pass == .backwardData, engine)
            guard convolution != nil, inputReorder != nil, weightReorder != nil, outputReorder != nil else { return nil }
        }

        deinit {
            for step in [convolution, inputReorder, weightReorder, outputReorder] {
                if let step { dnnl_primitive_destroy(step.primitive) }
            }
        }

        /// The implementation oneDNN picked must be a direct JIT kernel: "ref" is a slow loop and
        /// "gemm" is im2col again.
        private static func isDirect(_ pd: dnnl_primitive_desc_t) -> Bool {
            var info: UnsafePointer<CChar>?
            guard dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &info) == dnnl_success, let info else { return false }
            let name = String(cString: info)
            return name.contains("jit") && !name.contains("gemm") || name.contains("brg")
        }

        /// A reorder from `from` to `to`; with `accumulate` it adds into `to`.
        private static func reorder(_ from: inout dnnl_memory_desc_t, _ to: inout dnnl_memory_desc_t, accumulate: Bool,
                                    _ engine: dnnl_engine_t) -> Step? {
            guard let attr = attributes(accumulate: accumulate) else { return nil }
            defer { dnnl_primitive_attr_destroy(attr) }
            var rpd: dnnl_primitive_desc_t?
            guard dnnl_reorder_primitive_desc_create(&rpd, &from, engine, &to, engine, attr) == dnnl_success, let rpd else { return nil }
            defer { dnnl_primitive_desc_destroy(rpd) }
            return Step(rpd)
        }

        /// Runs with the calling thread's OpenMP count set to the plan's (`OneDNN.withThreads`).
        func run(input x: UnsafeMutablePointer<Float>, weight w: UnsafeMutablePointer<Float>,
                 bias b: UnsafeMutablePointer<Float>?, output y: UnsafeMutablePointer<Float>) {
            var stream: dnnl_stream_t?
            check(dnnl_stream_create(&stream, engine, UInt32(dnnl_stream_default_flags.rawValue)), "stream")
            defer { dnnl_stream_destroy(stream) }
            // Copies: several threads may run the same plan (training and sampling), and the C calls
            // take the descriptors by pointer.
            var (ux, uw, uy, bd) = (userInput, userWeight, userOutput, biasDesc)
            var (bx, bw, by) = (input, weight, output)
            Scratch.with { arena in
                // Buffers beyond the im2col budget in all (the VAE's 128-channel planes at 512 px:
                // 128 MiB each) are allocated per call, so that the thread's scratch arena, which
                // only grows, does not keep them for the rest of the process.
                var owned: [UnsafeMutablePointer<Float>] = []
                var fromArena = 0
                defer { owned.forEach { free($0) } }
                func scratch(_ d: inout dnnl_memory_desc_t) -> UnsafeMutableRawPointer {
                    let floats = (dnnl_memory_desc_get_size(&d) + 3) / 4
                    fromArena += floats
                    guard fromArena <= Conv2dGeometry.defaultColumnBudget else {
                        fromArena -= floats
                        owned.append(allocateAligned(floats: floats))
                        return UnsafeMutableRawPointer(owned.last!)
                    }
                    return UnsafeMutableRawPointer(arena.tensor([floats], zeroed: false).pointer)
                }
                let userX = memory(&ux, x), userW = memory(&uw, w), userY = memory(&uy, y)
                let blockedX = memory(&bx, scratch(&bx)), blockedW = memory(&bw, scratch(&bw))
                let blockedY = memory(&by, scratch(&by))
                let biasMemory = b.map { memory(&bd, $0) }
                defer { for m in [userX, userW, userY, blockedX, blockedW, blockedY, biasMemory] { if let m { dnnl_memory_destroy(m) } } }
                // Steps run one after another on the stream, so one scratchpad buffer serves them all.
                let steps = [inputReorder!, weightReorder!, convolution!, outputReorder!]
                var scratchpadDesc = steps.map(\.scratchpad).max { a, b in
                    var (a, b) = (a, b)
                    return dnnl_memory_desc_get_size(&a) < dnnl_memory_desc_get_size(&b)
                }!
                let scratchpad = dnnl_memory_desc_get_size(&scratchpadDesc) == 0 ? nil : scratch(&scratchpadDesc)
                func execute(_ step: Step, _ args: [(Int32, dnnl_memory_t?)]) {
                    var pad = step.scratchpad
                    let padMemory = scratchpad.map { memory(&pad, $0) }
                    defer { if let padMemory { dnnl_memory_destroy(padMemory) } }
                    let list = (args + (padMemory.map { [(DNNLArg.scratchpad, $0)] } ?? [])).map { dnnl_exec_arg_t(arg: $0.0, memory: $0.1) }
                    check(dnnl_primitive_execute(step.primitive, stream, Int32(list.count), list), "execute")
                }
                execute(steps[0], [(DNNLArg.from, userX), (DNNLArg.to, blockedX)])
                execute(steps[1], [(DNNLArg.from, userW), (DNNLArg.to, blockedW)])
                if pass == .forward {
                    var args = [(DNNLArg.src, blockedX), (DNNLArg.weights, blockedW), (DNNLArg.dst, blockedY)]
                    if let biasMemory { args.append((DNNLArg.bias, biasMemory)) }
                    execute(steps[2], args)
                } else {
                    execute(steps[2], [(DNNLArg.diffDst, blockedX), (DNNLArg.weights, blockedW), (DNNLArg.diffSrc, blockedY)])
                }
                execute(steps[3], [(DNNLArg.from, blockedY), (DNNLArg.to, userY)])
                check(dnnl_stream_wait(stream), "stream wait")
            }
        }

        private func memory(_ d: inout dnnl_memory_desc_t, _ handle: UnsafeMutableRawPointer) -> dnnl_memory_t? {
            var m: dnnl_memory_t?
            check(dnnl_memory_create(&m, &d, engine, handle), "memory")
            return m
        }

        private func memory(_ d: inout dnnl_memory_desc_t, _ handle: UnsafeMutablePointer<Float>) -> dnnl_memory_t? {
            memory(&d, UnsafeMutableRawPointer(handle))
        }

    }
}

/// Execution arguments (DNNL_ARG_*; their macros are aliases Swift does not import).
private enum DNNLArg {
    static let src: Int32 = 1, from: Int32 = 1, dst: Int32 = 17, to: Int32 = 17
    static let weights: Int32 = 33, bias: Int32 = 41, diffSrc: Int32 = 129, diffDst: Int32 = 145, scratchpad: Int32 = 80
}

/// A failure after the plan was built (out of memory inside oneDNN) is not recoverable here.
private func check(_ status: dnnl_status_t, _ what: String) {
    precondition(status == dnnl_success, "oneDNN convolution \(what) failed: status \(status.rawValue)")
}

/// A plain memory descriptor; false if oneDNN rejects it.
private func describe(_ d: inout dnnl_memory_desc_t, _ dims: [Int64], _ tag: dnnl_format_tag_t) -> Bool {
    dnnl_memory_desc_init_by_tag(&d, Int32(dims.count), dims, dnnl_f32, tag) == dnnl_success
}
