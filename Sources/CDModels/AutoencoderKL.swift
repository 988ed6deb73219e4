import CDTensor
import Foundation

/// diffusers `AutoencoderKL` (the SD VAE). Encoder: conv_in → DownEncoderBlock2D × levels (resnets,
/// then a stride-2 conv on the input padded right/bottom by one, but on the last level) → mid
/// (resnet, single-head attention, resnet) → GroupNorm, SiLU, conv_out to 2 × latent channels →
/// quant_conv: the mean and log-variance of the latent. Decoder mirrors it with nearest-2×
/// upsampling. All norms eps 1e-6.
public final class AutoencoderKL: @unchecked Sendable {
    public let config: AutoencoderKLConfig
    public let weights: Weights
    let encoderLevels: [(resnets: [ResnetBlock2D], down: String?)]
    let decoderLevels: [(resnets: [ResnetBlock2D], up: String?)]
    let encoderMid: (ResnetBlock2D, VAEAttention?, ResnetBlock2D)
    let decoderMid: (ResnetBlock2D, VAEAttention?, ResnetBlock2D)

    /// The latent distribution of an image: mean and log-variance (clamped to [−30, 20] as
    /// diffusers' DiagonalGaussianDistribution), each [B, latent, h, w].
    public struct LatentDistribution {
        public let mean: Tensor
        public let logVariance: Tensor
        public var std: Tensor {
            let s = Tensor(zeros: logVariance.shape)
            for i in 0..<s.count { s.pointer[i] = Foundation.exp(0.5 * logVariance.pointer[i]) }
            return s
        }
        /// mean + std · noise.
        public func sample(noise: Tensor) -> Tensor {
            precondition(noise.shape == mean.shape, "noise \(noise.shape) for latents \(mean.shape)")
            let std = self.std, out = Tensor(zeros: mean.shape)
            for i in 0..<out.count { out.pointer[i] = mean.pointer[i] + std.pointer[i] * noise.pointer[i] }
            return out
        }
    }

    public init(config: AutoencoderKLConfig, weights: Weights, configFile: String = "config") throws {
        try config.validate(file: configFile)
        self.config = config
        self.weights = weights
        let s = AutoencoderKL.structure(config)
        (encoderLevels, encoderMid, decoderLevels, decoderMid) = (s.encoder, s.encoderMid, s.decoder, s.decoderMid)
    }

    public static func load(directory: URL) throws -> AutoencoderKL {
        let configURL = directory.appendingPathComponent("config.json")
        let config = try readConfig(AutoencoderKLConfig.self, from: configURL)
        try config.validate(file: configURL.path)
        let files = try componentFiles(in: directory, base: "diffusion_pytorch_model")
        let weights = try Weights.load(from: files, specs: parameterSpecs(config), source: directory.path,
                                       rename: legacyAttentionName)
        return try AutoencoderKL(config: config, weights: weights, configFile: configURL.path)
    }

    /// diffusers' pre-0.14 VAE attention names (`query`, `key`, `value`, `proj_attn`) → current ones.
    static func legacyAttentionName(_ name: String) -> String {
        guard name.contains(".attentions.") else { return name }
        for (old, new) in [(".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0.")] {
            if let r = name.range(of: old) { return name.replacingCharacters(in: r, with: new) }
        }
        return name
    }

    public static func parameterSpecs(_ c: AutoencoderKLConfig) -> [ParameterSpec] {
        let s = structure(c)
        let (ch, l) = (c.blockOutChannels, c.latentChannels)
        func conv(_ p: String, _ o: Int, _ i: Int, _ k: Int) -> [ParameterSpec] {
            [ParameterSpec(p + ".weight", [o, i, k, k]), ParameterSpec(p + ".bias", [o])]
        }
        func norm(_ p: String, _ c: Int) -> [ParameterSpec] { [ParameterSpec(p + ".weight", [c]), ParameterSpec(p + ".bias", [c])] }
        var specs = conv("encoder.conv_in", ch[0], c.inChannels, 3)
        for (i, level) in s.encoder.enumerated() {
            specs += level.resnets.flatMap(\.specs)
            if let p = level.down { specs += conv(p + "conv", ch[i], ch[i], 3) }
        }
        for m in [s.encoderMid, s.decoderMid] { specs += m.0.specs + (m.1?.specs ?? []) + m.2.specs }
        specs += norm("encoder.conv_norm_out", ch[c.levels - 1]) + conv("encoder.conv_out", 2 * l, ch[c.levels - 1], 3)
        if c.quantConv { specs += conv("quant_conv", 2 * l, 2 * l, 1) }
        if c.postQuantConv { specs += conv("post_quant_conv", l, l, 1) }
        specs += conv("decoder.conv_in", ch[c.levels - 1], l, 3)
        let rch = Array(ch.reversed())
        for (i, level) in s.decoder.enumerated() {
            specs += level.resnets.flatMap(\.specs)
            if let p = level.up { specs += conv(p + "conv", rch[i], rch[i], 3) }
        }
        specs += norm("decoder.conv_norm_out", ch[0]) + conv("decoder.conv_out", c.outChannels, ch[0], 3)
        return specs
    }

    /// The latent distribution of images [B, in, H, W] in [−1, 1] (H, W multiples of 2^(levels−1)).
    /// `observe` sees "encoder_out" and "moments", valid only during the call (scratch memory).
    public func encode(_ image: Tensor, observe: ((String, Tensor) -> Void)? = nil) -> LatentDistribution {
        let c = config, w = weights, b = image.shape[0]
        precondition(image.rank == 4 && image.shape[1] == c.inChannels, "VAE input must be [B, \(c.inChannels), H, W]")
        let arenas = BlockArenas()
        var h = arenas.next { arena in
            let h = arena.tensor([b, c.blockOutChannels[0], image.shape[2], image.shape[3]], zeroed: false)
            conv2dForward(x: image, weight: w["encoder.conv_in.weight"], bias: w["encoder.conv_in.bias"], out: h, parameters: .init(stride: 1, padding: 1))
            return h
        }
        for level in encoderLevels {
            for r in level.resnets { h = arenas.next { r.forward(h, tembActivated: nil, w, $0) } }
            if let p = level.down {
                h = arenas.next { arena in
                    let out = arena.tensor([b, h.shape[1], h.shape[2] / 2, h.shape[3] / 2], zeroed: false)
                    conv2dForward(x: h, weight: w[p + "conv.weight"], bias: w[p + "conv.bias"], out: out, parameters: .vaeDownsample)
                    return out
                }
            }
        }
        h = mid(encoderMid, h, arenas)
        let arena = arenas.spare
        let moments = tail("encoder", h, outChannels: 2 * c.latentChannels, arena)
        observe?("encoder_out", moments)
        var m = moments
        if c.quantConv {
            m = arena.tensor(moments.shape, zeroed: false)
            conv2dForward(x: moments, weight: w["quant_conv.weight"], bias: w["quant_conv.bias"], out: m)
        }
        observe?("moments", m)
        let l = c.latentChannels, plane = m.shape[2] * m.shape[3]
        let shape = [b, l, m.shape[2], m.shape[3]]
        let mean = Tensor(zeros: shape), logvar = Tensor(zeros: shape)
        let halves = m.reshaped([b, 2, l * plane])  // [mean; logvar] along channels
        for s in 0..<b {
            mean[s].copy(from: halves[s][0])
            let lv = halves[s][1].pointer, dst = logvar[s].pointer
            for i in 0..<(l * plane) { dst[i] = min(max(lv[i], -30), 20) }
        }
        return LatentDistribution(mean: mean, logVariance: logvar)
    }

    /// Images [B, out, H, W] (unclamped) from latents z [B, latent, h, w] — already divided by
    /// the scaling factor, as diffusers' `decode` takes them.
    public func decode(_ z: Tensor) -> Tensor {
        let c = config, w = weights, b = z.shape[0]
        precondition(z.rank == 4 && z.shape[1] == c.latentChannels, "VAE latents must be [B, \(c.latentChannels), h, w]")
        let arenas = BlockArenas()
        var h = arenas.next { arena in
            var x = z
            if c.postQuantConv {
                x = arena.tensor(z.shape, zeroed: false)
                conv2dForward(x: z, weight: w["post_quant_conv.weight"], bias: w["post_quant_conv.bias"], out: x)
            }
            let h = arena.tensor([b, c.blockOutChannels[c.levels - 1], z.shape[2], z.shape[3]], zeroed: false)
            conv2dForward(x: x, weight: w["decoder.conv_in.weight"], bias: w["decoder.conv_in.bias"], out: h, parameters: .init(stride: 1, padding: 1))
            return h
        }
        h = mid(decoderMid, h, arenas)
        for level in decoderLevels {
            for r in level.resnets { h = arenas.next { r.forward(h, tembActivated: nil, w, $0) } }
            if let p = level.up { h = arenas.next { upsample2D(h, prefix: p, w, $0) } }
        }
        return tail("decoder", h, outChannels: c.outChannels, arenas.spare).copy()
    }

    private func mid(_ m: (ResnetBlock2D, VAEAttention?, ResnetBlock2D), _ x: Tensor, _ arenas: BlockArenas) -> Tensor {
        var h = arenas.next { m.0.forward(x, tembActivated: nil, weights, $0) }
        if let a = m.1 { h = arenas.next { a.forward(h, weights, $0) } }
        return arenas.next { m.2.forward(h, tembActivated: nil, weights, $0) }
    }

    /// conv_out(SiLU(conv_norm_out(h))).
    private func tail(_ side: String, _ h: Tensor, outChannels: Int, _ arena: Arena) -> Tensor {
        let b = h.shape[0], g = config.normNumGroups
        let normed = arena.tensor(h.shape, zeroed: false)
        groupNormForward(x: h, gamma: weights[side + ".conv_norm_out.weight"], beta: weights[side + ".conv_norm_out.bias"],
                         groups: g, eps: 1e-6, silu: true, out: normed, stats: GroupNormStats(arena, batch: b, groups: g))
        let out = arena.tensor([b, outChannels, h.shape[2], h.shape[3]], zeroed: false)
        conv2dForward(x: normed, weight: weights[side + ".conv_out.weight"], bias: weights[side + ".conv_out.bias"], out: out,
                      parameters: .init(stride: 1, padding: 1))
        return out
    }

    static func structure(_ c: AutoencoderKLConfig) -> (encoder: [(resnets: [ResnetBlock2D], down: String?)],
                                                          encoderMid: (ResnetBlock2D, VAEAttention?, ResnetBlock2D),
                                                          decoder: [(resnets: [ResnetBlock2D], up: String?)],
                                                          decoderMid: (ResnetBlock2D, VAEAttention?, ResnetBlock2D)) {
        let ch = c.blockOutChannels, n = c.levels, g = c.normNumGroups
        func resnet(_ p: String, _ i: Int, _ o: Int) -> ResnetBlock2D {
            ResnetBlock2D(prefix: p, inChannels: i, outChannels: o, groups: g, eps: 1e-6, timeEmbedding: nil)
        }
        func midBlock(_ side: String) -> (ResnetBlock2D, VAEAttention?, ResnetBlock2D) {
            let p = side + ".mid_block.", last = ch[n - 1]
            return (resnet(p + "resnets.0.", last, last),
                    c.midAttention ? VAEAttention(prefix: p + "attentions.0.", channels: last, groups: g) : nil,
                    resnet(p + "resnets.1.", last, last))
        }
        let encoder = (0..<n).map { i -> (resnets: [ResnetBlock2D], down: String?) in
            let p = "encoder.down_blocks.\(i)."
            let input = i == 0 ? ch[0] : ch[i - 1]
            return ((0..<c.layersPerBlock).map { resnet(p + "resnets.\($0).", $0 == 0 ? input : ch[i], ch[i]) },
                    i < n - 1 ? p + "downsamplers.0." : nil)
        }
        let rch = Array(ch.reversed())
        let decoder = (0..<n).map { i -> (resnets: [ResnetBlock2D], up: String?) in
            let p = "decoder.up_blocks.\(i)."
            let input = i == 0 ? rch[0] : rch[i - 1]
            return ((0...c.layersPerBlock).map { resnet(p + "resnets.\($0).", $0 == 0 ? input : rch[i], rch[i]) },
                    i < n - 1 ? p + "upsamplers.0." : nil)
        }
        return (encoder, midBlock("encoder"), decoder, midBlock("decoder"))
    }
}

/// The VAE mid-block attention (diffusers `Attention` with group_norm, one head of all channels,
/// residual): out = x + to_out.0(attn(to_q(h), to_k(h), to_v(h))), h = GroupNorm(x) as [B, H·W, C].
struct VAEAttention {
    let prefix: String
    let channels: Int
    let groups: Int

    var specs: [ParameterSpec] {
        let c = channels
        var s = [ParameterSpec(prefix + "group_norm.weight", [c]), ParameterSpec(prefix + "group_norm.bias", [c])]
        for name in ["to_q", "to_k", "to_v", "to_out.0"] {
            s += [ParameterSpec(prefix + name + ".weight", [c, c]), ParameterSpec(prefix + name + ".bias", [c])]
        }
        return s
    }

    func forward(_ x: Tensor, _ w: Weights, _ arena: Arena) -> Tensor {
        let (b, c, hw) = (x.shape[0], channels, x.shape[2] * x.shape[3])
        let normed = arena.tensor(x.shape, zeroed: false)
        groupNormForward(x: x, gamma: w[prefix + "group_norm.weight"], beta: w[prefix + "group_norm.bias"], groups: groups,
                         eps: 1e-6, out: normed, stats: GroupNormStats(arena, batch: b, groups: groups))
        let tokens = arena.tensor([b, hw, c], zeroed: false)
        transposeForward(normed, rows: c, cols: hw, out: tokens)
        let q = arena.tensor(tokens.shape, zeroed: false), k = arena.tensor(tokens.shape, zeroed: false)
        let v = arena.tensor(tokens.shape, zeroed: false), o = arena.tensor(tokens.shape, zeroed: false)
        linearForward(x: tokens, weight: w[prefix + "to_q.weight"], bias: w[prefix + "to_q.bias"], out: q)
        linearForward(x: tokens, weight: w[prefix + "to_k.weight"], bias: w[prefix + "to_k.bias"], out: k)
        linearForward(x: tokens, weight: w[prefix + "to_v.weight"], bias: w[prefix + "to_v.bias"], out: v)
        attentionForward(q: q, k: k, v: v, heads: 1, out: o, logSumExp: arena.tensor([b, 1, hw], zeroed: false))
        linearForward(x: o, weight: w[prefix + "to_out.0.weight"], bias: w[prefix + "to_out.0.bias"], out: q)
        let out = arena.tensor(x.shape, zeroed: false)
        transposeForward(q, rows: hw, cols: c, out: out)
        accumulate(x, into: out)
        return out
    }
}
