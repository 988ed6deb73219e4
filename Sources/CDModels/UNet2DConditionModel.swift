import CDTensor
import Foundation

/// diffusers `UNet2DConditionModel` for the SD 1.x/2.x block structure, every size from the config:
/// time embedding → conv_in → down blocks (resnets [+ transformers], downsampler but on the last)
/// → mid block (resnet, transformer, resnet) → up blocks (resnets over [h; skip] [+ transformers],
/// nearest-2× upsampler but on the last) → GroupNorm, SiLU, conv_out.
public final class UNet2DConditionModel: @unchecked Sendable {
    public let config: UNet2DConditionConfig
    public let weights: Weights

    struct Level {
        var resnets: [ResnetBlock2D]
        var attentions: [Transformer2D]
        var sampler: String?  // prefix of the down/upsampler conv, if the level has one
    }
    let down: [Level]
    let mid: (ResnetBlock2D, Transformer2D, ResnetBlock2D)
    let up: [Level]

    public init(config: UNet2DConditionConfig, weights: Weights, configFile: String = "config") throws {
        try config.validate(file: configFile)
        self.config = config
        self.weights = weights
        (down, mid, up) = UNet2DConditionModel.structure(config)
    }

    /// The (key, shape) table in diffusers names.
    public static func parameterSpecs(_ c: UNet2DConditionConfig) -> [ParameterSpec] {
        let (down, mid, up) = structure(c)
        let c0 = c.blockOutChannels[0], t = c.timeEmbedDim
        var s = [ParameterSpec("time_embedding.linear_1.weight", [t, c0]), ParameterSpec("time_embedding.linear_1.bias", [t]),
                 ParameterSpec("time_embedding.linear_2.weight", [t, t]), ParameterSpec("time_embedding.linear_2.bias", [t]),
                 ParameterSpec("conv_in.weight", [c0, c.inChannels, 3, 3]), ParameterSpec("conv_in.bias", [c0])]
        for (i, level) in (down + up).enumerated() {
            for r in level.resnets { s += r.specs }
            for a in level.attentions { s += a.specs }
            if let p = level.sampler, let ch = level.resnets.last?.outChannels {  // the level's output width
                s += [ParameterSpec(p + "conv.weight", [ch, ch, 3, 3]), ParameterSpec(p + "conv.bias", [ch])]
            }
            if i == down.count - 1 { s += mid.0.specs + mid.1.specs + mid.2.specs }
        }
        s += [ParameterSpec("conv_norm_out.weight", [c0]), ParameterSpec("conv_norm_out.bias", [c0]),
              ParameterSpec("conv_out.weight", [c.outChannels, c0, 3, 3]), ParameterSpec("conv_out.bias", [c.outChannels])]
        return s
    }

    /// Loads a diffusers `unet/` folder.
    public static func load(directory: URL) throws -> UNet2DConditionModel {
        let configURL = directory.appendingPathComponent("config.json")
        let config = try readConfig(UNet2DConditionConfig.self, from: configURL)
        try config.validate(file: configURL.path)
        let files = try componentFiles(in: directory, base: "diffusion_pytorch_model")
        let weights = try Weights.load(from: files, specs: parameterSpecs(config), source: directory.path)
        return try UNet2DConditionModel(config: config, weights: weights, configFile: configURL.path)
    }

    /// The same model with some parameters replaced (trained or edited weights), each checked
    /// against the parameter table. The other tensors are shared, not copied.
    public func replacingWeights(_ replacements: [String: Tensor]) throws -> UNet2DConditionModel {
        let shapes = Dictionary(Self.parameterSpecs(config).map { ($0.key, $0.shape) }, uniquingKeysWith: { a, _ in a })
        var tensors = weights.tensors
        var wrong: [String] = [], unknown: [String] = []
        for (key, t) in replacements.sorted(by: { $0.key < $1.key }) {
            guard let shape = shapes[key] else { unknown.append(key); continue }
            guard t.shape == shape else { wrong.append("\(key) is \(t.shape), expected \(shape)"); continue }
            tensors[key] = t
        }
        if !unknown.isEmpty || !wrong.isEmpty {
            throw ModelError.weightMismatch(source: "replacement UNet weights", missing: [], unexpected: unknown, wrongShapes: wrong)
        }
        return try UNet2DConditionModel(config: config, weights: Weights(tensors: tensors))
    }

    /// diffusers key → original LDM single-file key (`model.diffusion_model.…`) for this config.
    public static func ldmKeyNames(_ config: UNet2DConditionConfig) -> [String: String] { LDMKeyMap.unet(config) }

    /// The noise (or v) prediction for sample [B, in, H, W] at `timesteps` (one per sample) given
    /// context [B, S, cross_attention_dim]. `observe` receives named intermediates ("time_proj",
    /// "time_embedding", "conv_in", "down_blocks.i", "mid_block", "up_blocks.i"), valid only
    /// during the call (they live in scratch memory): copy what you keep.
    public func forward(sample: Tensor, timesteps: [Float], context: Tensor,
                        observe: ((String, Tensor) -> Void)? = nil) -> Tensor {
        let c = config, b = sample.shape[0]
        precondition(sample.rank == 4 && sample.shape[1] == c.inChannels && timesteps.count == b,
                     "UNet input must be [B, \(c.inChannels), H, W] with one timestep per sample")
        precondition(context.rank == 3 && context.shape[0] == b && context.shape[2] == c.crossAttentionDim,
                     "context must be [\(b), S, \(c.crossAttentionDim)], got \(context.shape)")
        let downFactor = 1 << (c.levels - 1)
        precondition(sample.shape[2] % downFactor == 0 && sample.shape[3] % downFactor == 0,
                     "sample height and width must be multiples of \(downFactor)")
        // Temporaries come from this thread's reusable scratch arena: no page faults per call.
        return Scratch.with { arena in
            let out = Tensor(zeros: [b, c.outChannels, sample.shape[2], sample.shape[3]])
            _ = run(sample: sample, timesteps: timesteps, context: context, out: out, keep: arena, tmp: arena, grads: nil, observe: observe)
            return out
        }
    }

    /// The forward pass for inference (`grads` nil: returns nil) and training (returns what
    /// backward needs, kept in `keep`). Writes the prediction into `out`.
    func run(sample: Tensor, timesteps: [Float], context: Tensor, out: Tensor, keep: Arena, tmp: Arena,
             grads: ParameterGradients?, observe: ((String, Tensor) -> Void)? = nil) -> UNetTape? {
        let c = config, w = weights, b = sample.shape[0]
        let training = grads != nil
        let tape = training ? UNetTape(sample: sample, context: context) : nil

        // Time: sinusoidal features → linear_1 → SiLU → linear_2; resnets take SiLU(temb).
        let c0 = c.blockOutChannels[0], td = c.timeEmbedDim
        let proj = timestepEmbedding(timesteps: timesteps, dim: c0, flipSinToCos: c.flipSinToCos ?? true,
                                     freqShift: Float(c.freqShift ?? 0))
        observe?("time_proj", proj)
        let t1 = keep.tensor([b, td], zeroed: false), t1Act = keep.tensor([b, td], zeroed: false)
        let temb = keep.tensor([b, td], zeroed: false), tembAct = keep.tensor([b, td], zeroed: false)
        linearForward(x: proj, weight: w["time_embedding.linear_1.weight"], bias: w["time_embedding.linear_1.bias"], out: t1)
        activationForward(.silu, x: t1, out: t1Act)
        linearForward(x: t1Act, weight: w["time_embedding.linear_2.weight"], bias: w["time_embedding.linear_2.bias"], out: temb)
        observe?("time_embedding", temb)
        activationForward(.silu, x: temb, out: tembAct)
        tape?.time = (proj, t1, t1Act, temb, tembAct)

        var h = keep.tensor([b, c0, sample.shape[2], sample.shape[3]], zeroed: false)
        conv2dForward(x: sample, weight: w["conv_in.weight"], bias: w["conv_in.bias"], out: h, parameters: .init(stride: 1, padding: 1))
        observe?("conv_in", h)
        var skips = [h]
        func resnet(_ r: ResnetBlock2D, _ x: Tensor) -> Tensor {
            let (y, saved) = r.forward(x, tembActivated: tembAct, w, keep: keep, tmp: tmp, grads: grads)
            if let saved { tape?.resnets[r.prefix] = saved }
            return y
        }
        func transformer(_ t: Transformer2D, _ x: Tensor) -> Tensor {
            let (y, saved) = t.forward(x, context: context, w, keep: keep, tmp: tmp, grads: grads)
            if let saved { tape?.transformers[t.prefix] = saved }
            return y
        }
        for (i, level) in down.enumerated() {
            for (j, r) in level.resnets.enumerated() {
                h = resnet(r, h)
                if j < level.attentions.count { h = transformer(level.attentions[j], h) }
                skips.append(h)
            }
            if let p = level.sampler {
                let y = keep.tensor([b, h.shape[1], h.shape[2] / 2, h.shape[3] / 2], zeroed: false)
                conv2dForward(x: h, weight: w[p + "conv.weight"], bias: w[p + "conv.bias"], out: y, parameters: .init(stride: 2, padding: 1))
                tape?.samplerInputs[p] = h
                h = y
                skips.append(h)
            }
            observe?("down_blocks.\(i)", h)
        }
        tape?.skips = skips
        h = resnet(mid.0, h)
        h = transformer(mid.1, h)
        h = resnet(mid.2, h)
        observe?("mid_block", h)
        for (i, level) in up.enumerated() {
            for (j, r) in level.resnets.enumerated() {
                let skip = skips.removeLast()
                let joined = keep.tensor([b, h.shape[1] + skip.shape[1], h.shape[2], h.shape[3]], zeroed: false)
                concatChannelsForward(h, skip, out: joined)
                h = resnet(r, joined)
                if j < level.attentions.count { h = transformer(level.attentions[j], h) }
            }
            if let p = level.sampler {
                let y = keep.tensor([b, h.shape[1], h.shape[2] * 2, h.shape[3] * 2], zeroed: false)
                let mark = tmp.mark
                defer { tmp.rewind(to: mark) }
                let big = (grads?[p + "conv.weight"] != nil ? keep : tmp).tensor(y.shape, zeroed: false)
                upsampleNearest2xForward(x: h, out: big)
                conv2dForward(x: big, weight: w[p + "conv.weight"], bias: w[p + "conv.bias"], out: y, parameters: .init(stride: 1, padding: 1))
                if grads?[p + "conv.weight"] != nil { tape?.samplerInputs[p] = big }
                h = y
            }
            observe?("up_blocks.\(i)", h)
        }
        let stats = GroupNormStats(keep, batch: b, groups: c.normNumGroups)
        let normed = (grads?["conv_out.weight"] != nil ? keep : tmp).tensor(h.shape, zeroed: false)
        groupNormForward(x: h, gamma: w["conv_norm_out.weight"], beta: w["conv_norm_out.bias"], groups: c.normNumGroups,
                         eps: c.normEps, silu: true, out: normed, stats: stats)
        conv2dForward(x: normed, weight: w["conv_out.weight"], bias: w["conv_out.bias"], out: out, parameters: .init(stride: 1, padding: 1))
        tape?.head = (h, stats, grads?["conv_out.weight"] != nil ? normed : nil)
        return tape
    }

    /// Block objects with their diffusers prefixes and channel counts (diffusers' constructor logic).
    static func structure(_ c: UNet2DConditionConfig) -> ([Level], (ResnetBlock2D, Transformer2D, ResnetBlock2D), [Level]) {
        let ch = c.blockOutChannels, n = c.levels, heads = c.headsPerLevel, tl = c.transformerLayersPerLevel
        let (g, eps, temb) = (c.normNumGroups, c.normEps, c.timeEmbedDim)
        func transformer(_ p: String, _ channels: Int, _ h: Int, _ layers: Int) -> Transformer2D {
            Transformer2D(prefix: p, channels: channels, heads: h, crossDim: c.crossAttentionDim, layers: layers,
                          groups: g, linearProjection: c.linearProjection)
        }
        var down: [Level] = []
        for i in 0..<n {
            let p = "down_blocks.\(i)."
            let input = i == 0 ? ch[0] : ch[i - 1]
            let resnets = (0..<c.layersPerBlock).map { j in
                ResnetBlock2D(prefix: p + "resnets.\(j).", inChannels: j == 0 ? input : ch[i], outChannels: ch[i],
                              groups: g, eps: eps, timeEmbedding: temb)
            }
            let attentions = c.downBlockTypes[i] == "CrossAttnDownBlock2D"
                ? (0..<c.layersPerBlock).map { transformer(p + "attentions.\($0).", ch[i], heads[i], tl[i]) } : []
            down.append(Level(resnets: resnets, attentions: attentions, sampler: i < n - 1 ? p + "downsamplers.0." : nil))
        }
        let last = ch[n - 1]
        let mid = (ResnetBlock2D(prefix: "mid_block.resnets.0.", inChannels: last, outChannels: last, groups: g, eps: eps, timeEmbedding: temb),
                   transformer("mid_block.attentions.0.", last, heads[n - 1], tl[n - 1]),
                   ResnetBlock2D(prefix: "mid_block.resnets.1.", inChannels: last, outChannels: last, groups: g, eps: eps, timeEmbedding: temb))
        let rch = Array(ch.reversed()), rheads = Array(heads.reversed()), rtl = Array(tl.reversed())
        var up: [Level] = []
        var output = rch[0]
        for i in 0..<n {
            let p = "up_blocks.\(i)."
            let previous = output
            output = rch[i]
            let input = rch[min(i + 1, n - 1)]
            let layers = c.layersPerBlock + 1
            let resnets = (0..<layers).map { j in
                let skip = j == layers - 1 ? input : output
                let resIn = j == 0 ? previous : output
                return ResnetBlock2D(prefix: p + "resnets.\(j).", inChannels: resIn + skip, outChannels: output,
                                     groups: g, eps: eps, timeEmbedding: temb)
            }
            let attentions = c.upBlockTypes[i] == "CrossAttnUpBlock2D"
                ? (0..<layers).map { transformer(p + "attentions.\($0).", output, rheads[i], rtl[i]) } : []
            up.append(Level(resnets: resnets, attentions: attentions, sampler: i < n - 1 ? p + "upsamplers.0." : nil))
        }
        return (down, mid, up)
    }
}
