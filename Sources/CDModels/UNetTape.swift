import CDTensor

/// What a UNet training forward keeps for its backward pass: block states by diffusers prefix, the
/// skip tensors in push order, the time-embedding chain and the output head's input. The tensors
/// live in the arena given to `trainingForward`; the tape is valid until that arena is rewound.
public final class UNetTape: @unchecked Sendable {
    let sample: Tensor, context: Tensor
    var time: (proj: Tensor, t1: Tensor, t1Act: Tensor, temb: Tensor, tembAct: Tensor)?
    var resnets: [String: ResnetBlock2D.Saved] = [:]
    var transformers: [String: Transformer2D.Saved] = [:]
    /// Downsampler conv inputs, and upsampler conv inputs (the 2× upsampled map) where that conv trains.
    var samplerInputs: [String: Tensor] = [:]
    var skips: [Tensor] = []
    var head: (h: Tensor, stats: GroupNormStats, normed: Tensor?)?

    init(sample: Tensor, context: Tensor) {
        self.sample = sample
        self.context = context
    }
}

extension UNet2DConditionModel {
    /// Training forward: the prediction [B, out, H, W] and the tape, both in `arena` (activations
    /// kept for the parameters in `grads`; kernels' temporaries come from per-thread scratch).
    public func trainingForward(sample: Tensor, timesteps: [Float], context: Tensor, grads: ParameterGradients,
                                arena: Arena) -> (prediction: Tensor, tape: UNetTape) {
        let c = config, b = sample.shape[0]
        precondition(sample.rank == 4 && sample.shape[1] == c.inChannels && timesteps.count == b && context.shape[0] == b,
                     "UNet training input shapes: sample \(sample.shape), \(timesteps.count) timesteps, context \(context.shape)")
        let out = arena.tensor([b, c.outChannels, sample.shape[2], sample.shape[3]], zeroed: false)
        let tape = Scratch.with { tmp in
            run(sample: sample, timesteps: timesteps, context: context, out: out, keep: arena, tmp: tmp, grads: grads)!
        }
        return (out, tape)
    }

    /// Backward of `trainingForward` for dOut (the loss gradient of the prediction): accumulates
    /// into `grads`, into dContext [B, S, cross] when given (the text encoder trains), and into
    /// dSample when given. `detachFirstContextToken`: cross-attention K/V of context position 0
    /// pass no gradient (Custom Diffusion detaches BOS). Work below the lowest block that has
    /// something to train is skipped.
    public func backward(_ tape: UNetTape, dOut: Tensor, grads g: ParameterGradients, dContext: Tensor?,
                         dSample: Tensor? = nil, detachFirstContextToken: Bool = true) {
        let w = weights, c = config
        guard let head = tape.head, let time = tape.time else { preconditionFailure("backward needs a training tape") }
        let need = GradientNeeds(self, grads: g, contextGradient: dContext != nil, sampleGradient: dSample != nil)
        let timeTrains = g.trains(prefix: "time_embedding.")
        let dTembAct: Tensor? = timeTrains ? Tensor(zeros: time.tembAct.shape) : nil
        Scratch.with { tmp in
            func resnet(_ r: ResnetBlock2D, _ dy: Tensor) -> Tensor? {
                let saved = tape.resnets[r.prefix]!
                let dx = need.before(r.prefix) ? Tensor(zeros: saved.x.shape) : nil
                r.backward(saved, dOut: dy, dx: dx, dTembActivated: dTembAct, w, g, tmp: tmp)
                return dx
            }
            func transformer(_ t: Transformer2D, _ dy: Tensor) -> Tensor? {
                let saved = tape.transformers[t.prefix]!
                let dx = need.before(t.prefix) ? Tensor(zeros: saved.x.shape) : nil
                t.backward(saved, context: tape.context, dOut: dy, dx: dx, dContext: dContext,
                           detachFirstToken: detachFirstContextToken, w, g, tmp: tmp)
                return dx
            }
            // Head: out = conv_out(SiLU(GroupNorm(h))).
            let dNormed = Tensor(zeros: head.h.shape)
            conv2dBackward(x: head.normed ?? shapeOnly(head.h.shape, tmp), weight: w["conv_out.weight"], dOut: dOut,
                           dx: need.before("conv_out.") ? dNormed : nil, dWeight: g["conv_out.weight"], dBias: g["conv_out.bias"],
                           parameters: .init(stride: 1, padding: 1))
            guard need.before("conv_out.") else { return }
            var dh: Tensor? = need.before("conv_norm_out.") ? Tensor(zeros: head.h.shape) : nil
            groupNormBackward(x: head.h, gamma: w["conv_norm_out.weight"], beta: w["conv_norm_out.bias"], groups: c.normNumGroups,
                              silu: true, stats: head.stats, dOut: dNormed, dx: dh,
                              dGamma: g["conv_norm_out.weight"], dBeta: g["conv_norm_out.bias"])
            // Skip gradients by push index, allocated when the up path reaches them.
            var dSkips = [Tensor?](repeating: nil, count: tape.skips.count)
            var skipIndex = 0  // the up path pops skips from the end, so backward meets them from index 0
            for level in up.reversed() {
                guard let dy = dh else { return }
                if let p = level.sampler {
                    let x = tape.samplerInputs[p] ?? shapeOnly(dy.shape, tmp)
                    let dBig = Tensor(zeros: dy.shape)
                    conv2dBackward(x: x, weight: w[p + "conv.weight"], dOut: dy, dx: need.before(p) ? dBig : nil,
                                   dWeight: g[p + "conv.weight"], dBias: g[p + "conv.bias"], parameters: .init(stride: 1, padding: 1))
                    guard need.before(p) else { return }
                    let small = Tensor(zeros: [dy.shape[0], dy.shape[1], dy.shape[2] / 2, dy.shape[3] / 2])
                    upsampleNearest2xBackward(dOut: dBig, dx: small)
                    dh = small
                }
                for j in level.resnets.indices.reversed() {
                    if j < level.attentions.count, let dy = dh { dh = transformer(level.attentions[j], dy) }
                    guard let dy = dh else { return }
                    let r = level.resnets[j]
                    guard let dJoined = resnet(r, dy) else { return }
                    // The resnet read [h; skip]: split its input gradient.
                    let index = skipIndex
                    skipIndex += 1
                    let skip = tape.skips[index]
                    let dPrev = Tensor(zeros: [dy.shape[0], dJoined.shape[1] - skip.shape[1], dy.shape[2], dy.shape[3]])
                    let dSkip = Tensor(zeros: skip.shape)
                    concatChannelsBackward(dOut: dJoined, da: dPrev, dc: dSkip, firstCount: dPrev.count / dy.shape[0],
                                           secondCount: skip.count / dy.shape[0])
                    dSkips[index] = dSkip
                    dh = dPrev
                }
            }
            for block in [{ (d: Tensor) in resnet(self.mid.2, d) }, { transformer(self.mid.1, $0) }, { resnet(self.mid.0, $0) }] {
                guard let dy = dh else { return }
                dh = block(dy)
            }
            // Down path: each unit's output is also a skip, whose gradient joins the stream's.
            var index = tape.skips.count - 1
            func joinSkip() {
                if let dy = dh, let s = dSkips[index] { accumulate(s, into: dy) }
                index -= 1
            }
            joinSkip()
            for level in down.reversed() {
                if let p = level.sampler {
                    guard let dy = dh else { return }
                    let x = tape.samplerInputs[p]!
                    let dx = need.before(p) ? Tensor(zeros: x.shape) : nil
                    conv2dBackward(x: x, weight: w[p + "conv.weight"], dOut: dy, dx: dx, dWeight: g[p + "conv.weight"],
                                   dBias: g[p + "conv.bias"], parameters: .init(stride: 2, padding: 1))
                    dh = dx
                    joinSkip()
                }
                for j in level.resnets.indices.reversed() {
                    if j < level.attentions.count, let dy = dh { dh = transformer(level.attentions[j], dy) }
                    guard let dy = dh else { return }
                    dh = resnet(level.resnets[j], dy)
                    joinSkip()
                }
            }
            guard let dy = dh else { return }
            conv2dBackward(x: tape.sample, weight: w["conv_in.weight"], dOut: dy, dx: dSample, dWeight: g["conv_in.weight"],
                           dBias: g["conv_in.bias"], parameters: .init(stride: 1, padding: 1))
        }
        if let dTembAct { timeEmbeddingBackward(time, dTembAct: dTembAct, g) }
    }

    /// temb = linear_2(SiLU(linear_1(proj))), resnets read SiLU(temb).
    private func timeEmbeddingBackward(_ t: (proj: Tensor, t1: Tensor, t1Act: Tensor, temb: Tensor, tembAct: Tensor),
                                       dTembAct: Tensor, _ g: ParameterGradients) {
        let w = weights
        let dTemb = Tensor(zeros: t.temb.shape), dT1Act = Tensor(zeros: t.t1.shape), dT1 = Tensor(zeros: t.t1.shape)
        activationBackward(.silu, x: t.temb, dOut: dTembAct, dx: dTemb)
        linearBackward(x: t.t1Act, weight: w["time_embedding.linear_2.weight"], dOut: dTemb, dx: dT1Act,
                       dWeight: g["time_embedding.linear_2.weight"], dBias: g["time_embedding.linear_2.bias"])
        activationBackward(.silu, x: t.t1, dOut: dT1Act, dx: dT1)
        linearBackward(x: t.proj, weight: w["time_embedding.linear_1.weight"], dOut: dT1, dx: nil,
                       dWeight: g["time_embedding.linear_1.weight"], dBias: g["time_embedding.linear_1.bias"])
    }
}

/// Which UNet units need the gradient of their input: those with something trainable (or a
/// gradient wanted) in a unit that runs before them. Units in forward order by diffusers prefix.
struct GradientNeeds {
    private var firstTrainable = Int.max
    private var order: [String: Int] = [:]

    init(_ unet: UNet2DConditionModel, grads g: ParameterGradients, contextGradient: Bool, sampleGradient: Bool) {
        let timeTrains = g.trains(prefix: "time_embedding.")
        var units: [(String, Bool)] = [("conv_in.", sampleGradient || g.trains(prefix: "conv_in."))]
        func add(resnets: [ResnetBlock2D], attentions: [Transformer2D], sampler: String?) {
            for (j, r) in resnets.enumerated() {
                units.append((r.prefix, timeTrains || g.trains(prefix: r.prefix)))
                if j < attentions.count { units.append((attentions[j].prefix, contextGradient || g.trains(prefix: attentions[j].prefix))) }
            }
            if let s = sampler { units.append((s, g.trains(prefix: s))) }
        }
        for l in unet.down { add(resnets: l.resnets, attentions: l.attentions, sampler: l.sampler) }
        add(resnets: [unet.mid.0, unet.mid.2], attentions: [unet.mid.1], sampler: nil)
        for l in unet.up { add(resnets: l.resnets, attentions: l.attentions, sampler: l.sampler) }
        units += [("conv_norm_out.", g.trains(prefix: "conv_norm_out.")), ("conv_out.", g.trains(prefix: "conv_out."))]
        for (i, (prefix, trains)) in units.enumerated() {
            order[prefix] = i
            if trains { firstTrainable = min(firstTrainable, i) }
        }
    }

    /// Whether something before the unit with this prefix trains (so its input gradient is needed).
    func before(_ prefix: String) -> Bool { firstTrainable < order[prefix]! }
}
