import CDTensor

/// diffusers `Transformer2DModel` as SD uses it (LDM's SpatialTransformer):
///   h = GroupNorm(x, eps 1e-6); tokens = proj_in(h) as [B, H·W, C] (SD1: 1×1 conv then reshape;
///   SD2: reshape then linear); `layers` × BasicTransformerBlock; back to NCHW via proj_out; + x.
/// BasicTransformerBlock: t += attn1(norm1(t)); t += attn2(norm2(t), context); t += ff(norm3(t)),
/// LayerNorms eps 1e-5, to_q/to_k/to_v without bias, to_out.0 with bias, GEGLU feed-forward (4C).
struct Transformer2D {
    let prefix: String
    let channels: Int, heads: Int, crossDim: Int, layers: Int
    let groups: Int
    let linearProjection: Bool

    var specs: [ParameterSpec] {
        let (c, p) = (channels, prefix)
        let proj = linearProjection ? [c, c] : [c, c, 1, 1]
        var s = [ParameterSpec(p + "norm.weight", [c]), ParameterSpec(p + "norm.bias", [c]),
                 ParameterSpec(p + "proj_in.weight", proj), ParameterSpec(p + "proj_in.bias", [c])]
        for k in 0..<layers {
            let b = p + "transformer_blocks.\(k)."
            for n in ["norm1", "norm2", "norm3"] { s += [ParameterSpec(b + n + ".weight", [c]), ParameterSpec(b + n + ".bias", [c])] }
            for (attn, kv) in [("attn1", c), ("attn2", crossDim)] {
                s += [ParameterSpec(b + attn + ".to_q.weight", [c, c]), ParameterSpec(b + attn + ".to_k.weight", [c, kv]),
                      ParameterSpec(b + attn + ".to_v.weight", [c, kv]),
                      ParameterSpec(b + attn + ".to_out.0.weight", [c, c]), ParameterSpec(b + attn + ".to_out.0.bias", [c])]
            }
            s += [ParameterSpec(b + "ff.net.0.proj.weight", [8 * c, c]), ParameterSpec(b + "ff.net.0.proj.bias", [8 * c]),
                  ParameterSpec(b + "ff.net.2.weight", [c, 4 * c]), ParameterSpec(b + "ff.net.2.bias", [c])]
        }
        s += [ParameterSpec(p + "proj_out.weight", proj), ParameterSpec(p + "proj_out.bias", [c])]
        return s
    }

    /// x [B, C, H, W], context [B, S, crossDim] → [B, C, H, W].
    func forward(_ x: Tensor, context: Tensor, _ w: Weights, _ arena: Arena) -> Tensor {
        let (b, c, hw) = (x.shape[0], channels, x.shape[2] * x.shape[3])
        let normed = arena.tensor(x.shape, zeroed: false)
        groupNormForward(x: x, gamma: w[prefix + "norm.weight"], beta: w[prefix + "norm.bias"], groups: groups, eps: 1e-6,
                         out: normed, stats: GroupNormStats(arena, batch: b, groups: groups))
        let tokens = arena.tensor([b, hw, c], zeroed: false)
        if linearProjection {
            let t = arena.tensor([b, hw, c], zeroed: false)
            transposeForward(normed, rows: c, cols: hw, out: t)
            linearForward(x: t, weight: w[prefix + "proj_in.weight"], bias: w[prefix + "proj_in.bias"], out: tokens)
        } else {
            let projected = arena.tensor(x.shape, zeroed: false)
            conv2dForward(x: normed, weight: w[prefix + "proj_in.weight"], bias: w[prefix + "proj_in.bias"], out: projected)
            transposeForward(projected, rows: c, cols: hw, out: tokens)
        }
        for k in 0..<layers { block(prefix + "transformer_blocks.\(k).", tokens, context, w, arena) }
        let out = arena.tensor(x.shape, zeroed: false)
        if linearProjection {
            let t = arena.tensor([b, hw, c], zeroed: false)
            linearForward(x: tokens, weight: w[prefix + "proj_out.weight"], bias: w[prefix + "proj_out.bias"], out: t)
            transposeForward(t, rows: hw, cols: c, out: out)
        } else {
            let t = arena.tensor(x.shape, zeroed: false)
            transposeForward(tokens, rows: hw, cols: c, out: t)
            conv2dForward(x: t, weight: w[prefix + "proj_out.weight"], bias: w[prefix + "proj_out.bias"], out: out)
        }
        accumulate(x, into: out)
        return out
    }

    /// One BasicTransformerBlock, in place on tokens [B, N, C].
    private func block(_ p: String, _ t: Tensor, _ context: Tensor, _ w: Weights, _ arena: Arena) {
        let mark = arena.mark
        defer { arena.rewind(to: mark) }
        let (rows, c) = (t.count / channels, channels)
        let h = arena.tensor(t.shape, zeroed: false), a = arena.tensor(t.shape, zeroed: false)
        layerNorm(p + "norm1", t, h, w, arena)
        attention(p + "attn1.", h, context: h, out: a, w, arena)
        accumulate(a, into: t)
        layerNorm(p + "norm2", t, h, w, arena)
        attention(p + "attn2.", h, context: context, out: a, w, arena)
        accumulate(a, into: t)
        layerNorm(p + "norm3", t, h, w, arena)
        let proj = arena.tensor([rows, 8 * c], zeroed: false), gated = arena.tensor([rows, 4 * c], zeroed: false)
        linearForward(x: h, weight: w[p + "ff.net.0.proj.weight"], bias: w[p + "ff.net.0.proj.bias"], out: proj)
        gegluForward(x: proj, out: gated)
        linearForward(x: gated, weight: w[p + "ff.net.2.weight"], bias: w[p + "ff.net.2.bias"], out: a)
        accumulate(a, into: t)
    }

    /// out = to_out.0(softmax(q kᵀ/√d) v) with q = to_q(x), k = to_k(ctx), v = to_v(ctx).
    private func attention(_ p: String, _ x: Tensor, context: Tensor, out: Tensor, _ w: Weights, _ arena: Arena) {
        let (b, n, c, s) = (x.shape[0], x.shape[1], channels, context.shape[1])
        let q = arena.tensor([b, n, c], zeroed: false), o = arena.tensor([b, n, c], zeroed: false)
        let k = arena.tensor([b, s, c], zeroed: false), v = arena.tensor([b, s, c], zeroed: false)
        linearForward(x: x, weight: w[p + "to_q.weight"], bias: nil, out: q)
        linearForward(x: context, weight: w[p + "to_k.weight"], bias: nil, out: k)
        linearForward(x: context, weight: w[p + "to_v.weight"], bias: nil, out: v)
        attentionForward(q: q, k: k, v: v, heads: heads, out: o, logSumExp: arena.tensor([b, heads, n], zeroed: false))
        linearForward(x: o, weight: w[p + "to_out.0.weight"], bias: w[p + "to_out.0.bias"], out: out)
    }

    private func layerNorm(_ name: String, _ x: Tensor, _ out: Tensor, _ w: Weights, _ arena: Arena) {
        let rows = x.count / channels
        layerNormForward(x: x, gamma: w[name + ".weight"], beta: w[name + ".bias"], eps: 1e-5, out: out,
                         mean: arena.tensor([rows], zeroed: false), rstd: arena.tensor([rows], zeroed: false))
    }
}
