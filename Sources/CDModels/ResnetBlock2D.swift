import CDTensor

/// diffusers `ResnetBlock2D` (UNet and VAE):
///   h = conv1(SiLU(norm1(x))) [+ time_emb_proj(SiLU(temb))[:, :, None, None]]
///   out = shortcut(x) + conv2(SiLU(norm2(h)))
/// shortcut is the 1×1 `conv_shortcut` when channels change, else identity. GroupNorm+SiLU run
/// fused. `timeEmbedding` is nil for the VAE's blocks.
struct ResnetBlock2D {
    let prefix: String
    let inChannels: Int, outChannels: Int
    let groups: Int, eps: Float
    let timeEmbedding: Int?

    var specs: [ParameterSpec] {
        let (i, o, p) = (inChannels, outChannels, prefix)
        var s = [ParameterSpec(p + "norm1.weight", [i]), ParameterSpec(p + "norm1.bias", [i]),
                 ParameterSpec(p + "conv1.weight", [o, i, 3, 3]), ParameterSpec(p + "conv1.bias", [o]),
                 ParameterSpec(p + "norm2.weight", [o]), ParameterSpec(p + "norm2.bias", [o]),
                 ParameterSpec(p + "conv2.weight", [o, o, 3, 3]), ParameterSpec(p + "conv2.bias", [o])]
        if let t = timeEmbedding { s += [ParameterSpec(p + "time_emb_proj.weight", [o, t]), ParameterSpec(p + "time_emb_proj.bias", [o])] }
        if i != o { s += [ParameterSpec(p + "conv_shortcut.weight", [o, i, 1, 1]), ParameterSpec(p + "conv_shortcut.bias", [o])] }
        return s
    }

    /// x [B, in, H, W], `tembActivated` = SiLU(temb) [B, T] (shared by every block) → [B, out, H, W].
    func forward(_ x: Tensor, tembActivated: Tensor?, _ w: Weights, _ arena: Arena) -> Tensor {
        let (b, h, wd) = (x.shape[0], x.shape[2], x.shape[3])
        let pad1 = Conv2dParameters(stride: 1, padding: 1)
        let normed = arena.tensor(x.shape, zeroed: false)
        groupNormForward(x: x, gamma: w[prefix + "norm1.weight"], beta: w[prefix + "norm1.bias"], groups: groups, eps: eps,
                         silu: true, out: normed, stats: GroupNormStats(arena, batch: b, groups: groups))
        let h1 = arena.tensor([b, outChannels, h, wd], zeroed: false)
        conv2dForward(x: normed, weight: w[prefix + "conv1.weight"], bias: w[prefix + "conv1.bias"], out: h1, parameters: pad1)
        if let tembActivated {
            let t = arena.tensor([b, outChannels], zeroed: false)
            linearForward(x: tembActivated, weight: w[prefix + "time_emb_proj.weight"], bias: w[prefix + "time_emb_proj.bias"], out: t)
            addChannelBroadcastForward(h1, t, out: h1)
        }
        let normed2 = arena.tensor(h1.shape, zeroed: false)
        groupNormForward(x: h1, gamma: w[prefix + "norm2.weight"], beta: w[prefix + "norm2.bias"], groups: groups, eps: eps,
                         silu: true, out: normed2, stats: GroupNormStats(arena, batch: b, groups: groups))
        let out = arena.tensor(h1.shape, zeroed: false)
        conv2dForward(x: normed2, weight: w[prefix + "conv2.weight"], bias: w[prefix + "conv2.bias"], out: out, parameters: pad1)
        if inChannels != outChannels {
            let s = arena.tensor(out.shape, zeroed: false)
            conv2dForward(x: x, weight: w[prefix + "conv_shortcut.weight"], bias: w[prefix + "conv_shortcut.bias"], out: s)
            accumulate(s, into: out)
        } else {
            accumulate(x, into: out)
        }
        return out
    }
}

/// diffusers `Upsample2D` with a conv (UNet and VAE decoder): nearest 2× then a 3×3 conv, pad 1.
func upsample2D(_ h: Tensor, prefix p: String, _ w: Weights, _ arena: Arena) -> Tensor {
    let big = arena.tensor([h.shape[0], h.shape[1], h.shape[2] * 2, h.shape[3] * 2], zeroed: false)
    upsampleNearest2xForward(x: h, out: big)
    let out = arena.tensor(big.shape, zeroed: false)
    conv2dForward(x: big, weight: w[p + "conv.weight"], bias: w[p + "conv.bias"], out: out, parameters: .init(stride: 1, padding: 1))
    return out
}

extension GroupNormStats {
    /// Statistics tensors from an arena.
    init(_ arena: Arena, batch: Int, groups: Int) {
        self.init(mean: arena.tensor([batch, groups], zeroed: false), rstd: arena.tensor([batch, groups], zeroed: false))
    }
}
