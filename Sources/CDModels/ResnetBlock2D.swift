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

    /// What backward needs: the input, norm statistics, conv1's output h (norm2's input), and the
    /// GroupNorm+SiLU outputs only where the conv reading them has a trainable weight.
    struct Saved {
        let x: Tensor, h1: Tensor
        let stats1: GroupNormStats, stats2: GroupNormStats
        let normed1: Tensor?, normed2: Tensor?
        let tembActivated: Tensor?
    }

    /// Inference: x [B, in, H, W], `tembActivated` = SiLU(temb) [B, T] → [B, out, H, W] from `arena`.
    func forward(_ x: Tensor, tembActivated: Tensor?, _ w: Weights, _ arena: Arena) -> Tensor {
        forward(x, tembActivated: tembActivated, w, keep: arena, tmp: arena, grads: nil).out
    }

    /// The output and what it keeps come from `keep`; temporaries from `tmp`, rewound before
    /// returning (the same arena works: the kept tensors are allocated first). `grads` non-nil
    /// means training: return the saved state.
    func forward(_ x: Tensor, tembActivated: Tensor?, _ w: Weights, keep: Arena, tmp: Arena,
                 grads: ParameterGradients?) -> (out: Tensor, saved: Saved?) {
        let (b, h, wd, p) = (x.shape[0], x.shape[2], x.shape[3], prefix)
        let pad1 = Conv2dParameters(stride: 1, padding: 1)
        let out = keep.tensor([b, outChannels, h, wd], zeroed: false)
        let h1 = keep.tensor(out.shape, zeroed: false)
        let stats1 = GroupNormStats(keep, batch: b, groups: groups), stats2 = GroupNormStats(keep, batch: b, groups: groups)
        let mark = tmp.mark
        defer { tmp.rewind(to: mark) }
        let normed1 = (grads?[p + "conv1.weight"] != nil ? keep : tmp).tensor(x.shape, zeroed: false)
        let normed2 = (grads?[p + "conv2.weight"] != nil ? keep : tmp).tensor(out.shape, zeroed: false)
        groupNormForward(x: x, gamma: w[p + "norm1.weight"], beta: w[p + "norm1.bias"], groups: groups, eps: eps,
                         silu: true, out: normed1, stats: stats1)
        conv2dForward(x: normed1, weight: w[p + "conv1.weight"], bias: w[p + "conv1.bias"], out: h1, parameters: pad1)
        if let tembActivated {
            let t = tmp.tensor([b, outChannels], zeroed: false)
            linearForward(x: tembActivated, weight: w[p + "time_emb_proj.weight"], bias: w[p + "time_emb_proj.bias"], out: t)
            addChannelBroadcastForward(h1, t, out: h1)
        }
        groupNormForward(x: h1, gamma: w[p + "norm2.weight"], beta: w[p + "norm2.bias"], groups: groups, eps: eps,
                         silu: true, out: normed2, stats: stats2)
        conv2dForward(x: normed2, weight: w[p + "conv2.weight"], bias: w[p + "conv2.bias"], out: out, parameters: pad1)
        if inChannels != outChannels {
            let s = tmp.tensor(out.shape, zeroed: false)
            conv2dForward(x: x, weight: w[p + "conv_shortcut.weight"], bias: w[p + "conv_shortcut.bias"], out: s)
            accumulate(s, into: out)
        } else {
            accumulate(x, into: out)
        }
        guard let grads else { return (out, nil) }
        return (out, Saved(x: x, h1: h1, stats1: stats1, stats2: stats2,
                           normed1: grads[p + "conv1.weight"] != nil ? normed1 : nil,
                           normed2: grads[p + "conv2.weight"] != nil ? normed2 : nil, tembActivated: tembActivated))
    }

    /// Accumulates dx (when given), dTembActivated (when given) and the gradients of this block's
    /// trainable parameters, for dOut [B, out, H, W].
    func backward(_ s: Saved, dOut: Tensor, dx: Tensor?, dTembActivated: Tensor?, _ w: Weights,
                  _ g: ParameterGradients, tmp: Arena) {
        let p = prefix, b = dOut.shape[0]
        let pad1 = Conv2dParameters(stride: 1, padding: 1)
        let mark = tmp.mark
        defer { tmp.rewind(to: mark) }
        // out = conv2(n2) + shortcut(x)
        let dn2 = tmp.tensor(s.h1.shape)
        conv2dBackward(x: s.normed2 ?? shapeOnly(s.h1.shape, tmp), weight: w[p + "conv2.weight"], dOut: dOut, dx: dn2,
                       dWeight: g[p + "conv2.weight"], dBias: g[p + "conv2.bias"], parameters: pad1)
        let dh1 = tmp.tensor(s.h1.shape)
        groupNormBackward(x: s.h1, gamma: w[p + "norm2.weight"], beta: w[p + "norm2.bias"], groups: groups, silu: true,
                          stats: s.stats2, dOut: dn2, dx: dh1, dGamma: g[p + "norm2.weight"], dBeta: g[p + "norm2.bias"])
        if let tembActivated = s.tembActivated,
           dTembActivated != nil || g[p + "time_emb_proj.weight"] != nil || g[p + "time_emb_proj.bias"] != nil {
            let dt = tmp.tensor([b, outChannels])
            addChannelBroadcastBackward(dOut: dh1, dx: nil, dv: dt)
            linearBackward(x: tembActivated, weight: w[p + "time_emb_proj.weight"], dOut: dt, dx: dTembActivated,
                           dWeight: g[p + "time_emb_proj.weight"], dBias: g[p + "time_emb_proj.bias"])
        }
        let normTrains = g[p + "norm1.weight"] != nil || g[p + "norm1.bias"] != nil
        let dn1 = dx != nil || normTrains ? tmp.tensor(s.x.shape) : nil
        conv2dBackward(x: s.normed1 ?? shapeOnly(s.x.shape, tmp), weight: w[p + "conv1.weight"], dOut: dh1, dx: dn1,
                       dWeight: g[p + "conv1.weight"], dBias: g[p + "conv1.bias"], parameters: pad1)
        if let dn1 {
            groupNormBackward(x: s.x, gamma: w[p + "norm1.weight"], beta: w[p + "norm1.bias"], groups: groups, silu: true,
                              stats: s.stats1, dOut: dn1, dx: dx, dGamma: g[p + "norm1.weight"], dBeta: g[p + "norm1.bias"])
        }
        if inChannels != outChannels {
            conv2dBackward(x: s.x, weight: w[p + "conv_shortcut.weight"], dOut: dOut, dx: dx,
                           dWeight: g[p + "conv_shortcut.weight"], dBias: g[p + "conv_shortcut.bias"])
        } else if let dx {
            accumulate(dOut, into: dx)
        }
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

/// A tensor that only carries a shape: the input of a conv or linear whose weight is frozen is
/// never read by its backward (only its shape is), so it need not be kept. Not zeroed, so its
/// pages are never touched.
func shapeOnly(_ shape: [Int], _ arena: Arena) -> Tensor { arena.tensor(shape, zeroed: false) }

extension GroupNormStats {
    /// Statistics tensors from an arena.
    init(_ arena: Arena, batch: Int, groups: Int) {
        self.init(mean: arena.tensor([batch, groups], zeroed: false), rstd: arena.tensor([batch, groups], zeroed: false))
    }
}
