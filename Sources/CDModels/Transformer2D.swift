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

    /// Saved by a training forward. Token tensors are [B, N, C] with N = H·W.
    struct Saved {
        let x: Tensor, stats: GroupNormStats
        let normed: Tensor?        // GroupNorm output [B, C, H, W], kept when proj_in trains
        let projected: Tensor?     // proj_in's input in token layout (linear projection), same condition
        let blocks: [BlockSaved]
        let tokensOut: Tensor      // the stream after the last block, proj_out's input (token layout)
        let projOutInput: Tensor?  // conv proj_out's input [B, C, H, W], kept when proj_out trains
    }

    /// One BasicTransformerBlock: its input stream and, per sub-layer, the LayerNorm output and
    /// statistics, attention q/k/v/output/log-sum-exp, the stream after it, and the feed-forward's
    /// [B·N, 8C] projection (GEGLU's input).
    struct BlockSaved {
        let streams: [Tensor]           // t0 (input), t1, t2 (after attn1, attn2); the output is the next block's t0
        let norms: [(out: Tensor, mean: Tensor, rstd: Tensor)]
        let attn: [AttentionSaved]      // attn1, attn2
        let ffProj: Tensor, ffGated: Tensor?
    }

    struct AttentionSaved { let q, k, v, o, lse: Tensor }

    /// Inference: x [B, C, H, W], context [B, S, crossDim] → [B, C, H, W] from `arena`.
    func forward(_ x: Tensor, context: Tensor, _ w: Weights, _ arena: Arena) -> Tensor {
        forward(x, context: context, w, keep: arena, tmp: arena, grads: nil).out
    }

    /// See `ResnetBlock2D.forward(_:tembActivated:_:keep:tmp:grads:)` for the arena contract.
    func forward(_ x: Tensor, context: Tensor, _ w: Weights, keep: Arena, tmp: Arena,
                 grads: ParameterGradients?) -> (out: Tensor, saved: Saved?) {
        let (b, c, hw, p) = (x.shape[0], channels, x.shape[2] * x.shape[3], prefix)
        let out = keep.tensor(x.shape, zeroed: false)
        let stats = GroupNormStats(keep, batch: b, groups: groups)
        let inTrains = grads?[p + "proj_in.weight"] != nil, outTrains = grads?[p + "proj_out.weight"] != nil
        var tokens = keep.tensor([b, hw, c], zeroed: false)
        // Temporaries (from `tmp` after this mark) are released on return; kept tensors come from `keep`.
        let mark = tmp.mark
        defer { tmp.rewind(to: mark) }
        let normed = (inTrains ? keep : tmp).tensor(x.shape, zeroed: false)
        let projected = linearProjection ? (inTrains ? keep : tmp).tensor([b, hw, c], zeroed: false) : nil
        groupNormForward(x: x, gamma: w[p + "norm.weight"], beta: w[p + "norm.bias"], groups: groups, eps: 1e-6,
                         out: normed, stats: stats)
        if let projected {
            transposeForward(normed, rows: c, cols: hw, out: projected)
            linearForward(x: projected, weight: w[p + "proj_in.weight"], bias: w[p + "proj_in.bias"], out: tokens)
        } else {
            let t = tmp.tensor(x.shape, zeroed: false)
            conv2dForward(x: normed, weight: w[p + "proj_in.weight"], bias: w[p + "proj_in.bias"], out: t)
            transposeForward(t, rows: c, cols: hw, out: tokens)
        }
        var blocks: [BlockSaved] = []
        for k in 0..<layers {
            let (next, saved) = block(p + "transformer_blocks.\(k).", tokens, context, w, keep: keep, tmp: tmp, grads: grads)
            tokens = next
            if let saved { blocks.append(saved) }
        }
        let projOutInput = linearProjection ? nil : (outTrains ? keep : tmp).tensor(x.shape, zeroed: false)
        if let projOutInput {
            transposeForward(tokens, rows: hw, cols: c, out: projOutInput)
            conv2dForward(x: projOutInput, weight: w[p + "proj_out.weight"], bias: w[p + "proj_out.bias"], out: out)
        } else {
            let t = tmp.tensor([b, hw, c], zeroed: false)
            linearForward(x: tokens, weight: w[p + "proj_out.weight"], bias: w[p + "proj_out.bias"], out: t)
            transposeForward(t, rows: hw, cols: c, out: out)
        }
        accumulate(x, into: out)
        guard grads != nil else { return (out, nil) }
        return (out, Saved(x: x, stats: stats, normed: inTrains ? normed : nil, projected: inTrains ? projected : nil,
                           blocks: blocks, tokensOut: tokens, projOutInput: outTrains ? projOutInput : nil))
    }

    /// One BasicTransformerBlock on the stream t [B, N, C]; returns the new stream (from `keep`).
    private func block(_ p: String, _ t0: Tensor, _ context: Tensor, _ w: Weights, keep: Arena, tmp: Arena,
                       grads: ParameterGradients?) -> (Tensor, BlockSaved?) {
        let training = grads != nil
        let (rows, c) = (t0.count / channels, channels)
        // Inference keeps only the streams; training also keeps LayerNorm outputs, attention
        // internals and the feed-forward projection.
        let save = training ? keep : tmp
        let t3 = keep.tensor(t0.shape, zeroed: false)
        let mark = tmp.mark
        defer { tmp.rewind(to: mark) }
        let t1 = save.tensor(t0.shape, zeroed: false), t2 = save.tensor(t0.shape, zeroed: false)
        func norm(_ name: String, _ x: Tensor) -> (out: Tensor, mean: Tensor, rstd: Tensor) {
            let n = (save.tensor(x.shape, zeroed: false), save.tensor([rows], zeroed: false), save.tensor([rows], zeroed: false))
            layerNormForward(x: x, gamma: w[name + ".weight"], beta: w[name + ".bias"], eps: 1e-5, out: n.0, mean: n.1, rstd: n.2)
            return n
        }
        let a = tmp.tensor(t0.shape, zeroed: false)
        let n1 = norm(p + "norm1", t0)
        let s1 = attention(p + "attn1.", n1.out, context: n1.out, out: a, w, save: save, tmp: tmp)
        addForward(t0, a, out: t1)
        let n2 = norm(p + "norm2", t1)
        let s2 = attention(p + "attn2.", n2.out, context: context, out: a, w, save: save, tmp: tmp)
        addForward(t1, a, out: t2)
        let n3 = norm(p + "norm3", t2)
        let proj = save.tensor([rows, 8 * c], zeroed: false)
        let gated = (grads?[p + "ff.net.2.weight"] != nil ? keep : tmp).tensor([rows, 4 * c], zeroed: false)
        linearForward(x: n3.out, weight: w[p + "ff.net.0.proj.weight"], bias: w[p + "ff.net.0.proj.bias"], out: proj)
        gegluForward(x: proj, out: gated)
        linearForward(x: gated, weight: w[p + "ff.net.2.weight"], bias: w[p + "ff.net.2.bias"], out: a)
        addForward(t2, a, out: t3)
        guard training else { return (t3, nil) }
        return (t3, BlockSaved(streams: [t0, t1, t2], norms: [n1, n2, n3], attn: [s1, s2], ffProj: proj,
                               ffGated: grads?[p + "ff.net.2.weight"] != nil ? gated : nil))
    }

    /// out = to_out.0(softmax(q kᵀ/√d) v) with q = to_q(x), k = to_k(ctx), v = to_v(ctx).
    private func attention(_ p: String, _ x: Tensor, context: Tensor, out: Tensor, _ w: Weights,
                           save: Arena, tmp: Arena) -> AttentionSaved {
        let (b, n, c, s) = (x.shape[0], x.shape[1], channels, context.shape[1])
        let q = save.tensor([b, n, c], zeroed: false), o = save.tensor([b, n, c], zeroed: false)
        let k = save.tensor([b, s, c], zeroed: false), v = save.tensor([b, s, c], zeroed: false)
        let lse = save.tensor([b, heads, n], zeroed: false)
        linearForward(x: x, weight: w[p + "to_q.weight"], bias: nil, out: q)
        linearForward(x: context, weight: w[p + "to_k.weight"], bias: nil, out: k)
        linearForward(x: context, weight: w[p + "to_v.weight"], bias: nil, out: v)
        attentionForward(q: q, k: k, v: v, heads: heads, out: o, logSumExp: lse)
        linearForward(x: o, weight: w[p + "to_out.0.weight"], bias: w[p + "to_out.0.bias"], out: out)
        return AttentionSaved(q: q, k: k, v: v, o: o, lse: lse)
    }

    // MARK: - Backward

    /// Accumulates dx and dContext (when given) and the trainable parameters' gradients for
    /// dOut [B, C, H, W]. `detachFirstToken`: the key and value of context position 0 (BOS) pass
    /// no gradient (Custom Diffusion's rule; forward values are unchanged).
    func backward(_ s: Saved, context: Tensor, dOut: Tensor, dx: Tensor?, dContext: Tensor?, detachFirstToken: Bool,
                  _ w: Weights, _ g: ParameterGradients, tmp: Arena) {
        let (b, c, hw, p) = (dOut.shape[0], channels, dOut.shape[2] * dOut.shape[3], prefix)
        let mark = tmp.mark
        defer { tmp.rewind(to: mark) }
        if let dx { accumulate(dOut, into: dx) }
        let dTokens = tmp.tensor([b, hw, c])
        if linearProjection {
            let dt = tmp.tensor([b, hw, c])
            transposeBackward(dOut: dOut, rows: hw, cols: c, dx: dt)
            linearBackward(x: s.tokensOut, weight: w[p + "proj_out.weight"], dOut: dt, dx: dTokens,
                           dWeight: g[p + "proj_out.weight"], dBias: g[p + "proj_out.bias"])
        } else {
            let dt = tmp.tensor(dOut.shape)
            conv2dBackward(x: s.projOutInput ?? shapeOnly(dOut.shape, tmp), weight: w[p + "proj_out.weight"], dOut: dOut, dx: dt,
                           dWeight: g[p + "proj_out.weight"], dBias: g[p + "proj_out.bias"])
            transposeBackward(dOut: dt, rows: hw, cols: c, dx: dTokens)
        }
        // Whether the gradient of the stream entering block k (or the tokens before block 0) is needed.
        let inputNeeded = dx != nil || g.trains(prefix: p + "norm.") || g.trains(prefix: p + "proj_in.")
        for k in (0..<layers).reversed() {
            let earlier = (0..<k).contains { g.trains(prefix: p + "transformer_blocks.\($0).") } || (k > 0 && dContext != nil)
            blockBackward(p + "transformer_blocks.\(k).", s.blocks[k], context: context, dT: dTokens,
                          needInput: inputNeeded || earlier, dContext: dContext, detachFirstToken: detachFirstToken, w, g, tmp: tmp)
        }
        guard inputNeeded else { return }
        let dNormed = tmp.tensor(s.x.shape)
        if let projected = s.projected ?? (linearProjection ? shapeOnly([b, hw, c], tmp) : nil) {
            let dProjected = tmp.tensor([b, hw, c])
            linearBackward(x: projected, weight: w[p + "proj_in.weight"], dOut: dTokens, dx: dProjected,
                           dWeight: g[p + "proj_in.weight"], dBias: g[p + "proj_in.bias"])
            transposeBackward(dOut: dProjected, rows: c, cols: hw, dx: dNormed)
        } else {
            let dt = tmp.tensor(s.x.shape)
            transposeBackward(dOut: dTokens, rows: c, cols: hw, dx: dt)
            conv2dBackward(x: s.normed ?? shapeOnly(s.x.shape, tmp), weight: w[p + "proj_in.weight"], dOut: dt, dx: dNormed,
                           dWeight: g[p + "proj_in.weight"], dBias: g[p + "proj_in.bias"])
        }
        groupNormBackward(x: s.x, gamma: w[p + "norm.weight"], beta: w[p + "norm.bias"], groups: groups, stats: s.stats,
                          dOut: dNormed, dx: dx, dGamma: g[p + "norm.weight"], dBeta: g[p + "norm.bias"])
    }

    /// dT holds the gradient of the block's output stream on entry and of its input stream on exit
    /// (each sub-layer is a residual branch: the stream gradient passes through and the branch's
    /// input gradient is added). A branch is differentiated only if it, or anything before it, trains.
    private func blockBackward(_ p: String, _ s: BlockSaved, context: Tensor, dT: Tensor, needInput: Bool,
                               dContext: Tensor?, detachFirstToken: Bool, _ w: Weights, _ g: ParameterGradients, tmp: Arena) {
        let rows = dT.count / channels, c = channels
        let mark = tmp.mark
        defer { tmp.rewind(to: mark) }
        let attn1 = g.trains(prefix: p + "norm1.") || g.trains(prefix: p + "attn1.")
        let attn2 = g.trains(prefix: p + "norm2.") || g.trains(prefix: p + "attn2.") || dContext != nil
        let ff = g.trains(prefix: p + "norm3.") || g.trains(prefix: p + "ff.")
        let need = [needInput, needInput || attn1, needInput || attn1 || attn2]  // stream gradient wanted at t0, t1, t2

        if need[2] || ff {
            let dGated = tmp.tensor([rows, 4 * c]), dProj = tmp.tensor([rows, 8 * c]), dH = tmp.tensor(dT.shape)
            linearBackward(x: s.ffGated ?? shapeOnly([rows, 4 * c], tmp), weight: w[p + "ff.net.2.weight"], dOut: dT, dx: dGated,
                           dWeight: g[p + "ff.net.2.weight"], dBias: g[p + "ff.net.2.bias"])
            gegluBackward(x: s.ffProj, dOut: dGated, dx: dProj)
            linearBackward(x: s.norms[2].out, weight: w[p + "ff.net.0.proj.weight"], dOut: dProj, dx: dH,
                           dWeight: g[p + "ff.net.0.proj.weight"], dBias: g[p + "ff.net.0.proj.bias"])
            layerNormBackward(x: s.streams[2], gamma: w[p + "norm3.weight"], mean: s.norms[2].mean, rstd: s.norms[2].rstd,
                              dOut: dH, dx: need[2] ? dT : nil, dGamma: g[p + "norm3.weight"], dBeta: g[p + "norm3.bias"])
        }
        if need[1] || attn2 {
            attentionBackward(p + "attn2.", s.attn[1], input: s.norms[1], stream: s.streams[1], context: context,
                              norm: p + "norm2", dT: dT, needInput: need[1], dContext: dContext, detachFirstToken: detachFirstToken,
                              w, g, tmp: tmp)
        }
        if need[0] || attn1 {
            attentionBackward(p + "attn1.", s.attn[0], input: s.norms[0], stream: s.streams[0], context: nil,
                              norm: p + "norm1", dT: dT, needInput: need[0], dContext: nil, detachFirstToken: false,
                              w, g, tmp: tmp)
        }
    }

    /// Backward of t_out = t + to_out(attention(to_q(n), to_k(ctx), to_v(ctx))), n = LayerNorm(t),
    /// with ctx = n for self-attention (`context` nil). Adds into dT when `needInput`.
    private func attentionBackward(_ p: String, _ a: AttentionSaved, input n: (out: Tensor, mean: Tensor, rstd: Tensor),
                                   stream: Tensor, context: Tensor?, norm: String, dT: Tensor, needInput: Bool,
                                   dContext: Tensor?, detachFirstToken: Bool, _ w: Weights, _ g: ParameterGradients, tmp: Arena) {
        let normTrains = g[norm + ".weight"] != nil || g[norm + ".bias"] != nil
        let wantN = needInput || normTrains  // gradient of the LayerNorm output
        let wantQ = wantN || g[p + "to_q.weight"] != nil
        let wantKV = (context == nil && wantN) || dContext != nil || g[p + "to_k.weight"] != nil || g[p + "to_v.weight"] != nil
        let dO = tmp.tensor(a.o.shape)
        linearBackward(x: a.o, weight: w[p + "to_out.0.weight"], dOut: dT, dx: wantQ || wantKV ? dO : nil,
                       dWeight: g[p + "to_out.0.weight"], dBias: g[p + "to_out.0.bias"])
        guard wantQ || wantKV else { return }
        let dq = wantQ ? tmp.tensor(a.q.shape) : nil
        let dk = wantKV ? tmp.tensor(a.k.shape) : nil, dv = wantKV ? tmp.tensor(a.v.shape) : nil
        CDTensor.attentionBackward(q: a.q, k: a.k, v: a.v, heads: heads, out: a.o, logSumExp: a.lse, dOut: dO, dq: dq, dk: dk, dv: dv)
        if detachFirstToken, let dk, let dv {
            // K' = m⊙K + (1−m)⊙stopgrad(K) with m = 0 at position 0: its rows pass nothing back.
            let (bsz, s, width) = (dk.shape[0], dk.shape[1], dk.shape[2])
            for b in 0..<bsz {
                (dk.pointer + b * s * width).update(repeating: 0, count: width)
                (dv.pointer + b * s * width).update(repeating: 0, count: width)
            }
        }
        let dN = wantN ? tmp.tensor(n.out.shape) : nil
        if let dq {
            linearBackward(x: n.out, weight: w[p + "to_q.weight"], dOut: dq, dx: dN, dWeight: g[p + "to_q.weight"], dBias: nil)
        }
        if let dk, let dv {
            let ctx = context ?? n.out
            let dCtx = context == nil ? dN : dContext
            linearBackward(x: ctx, weight: w[p + "to_k.weight"], dOut: dk, dx: dCtx, dWeight: g[p + "to_k.weight"], dBias: nil)
            linearBackward(x: ctx, weight: w[p + "to_v.weight"], dOut: dv, dx: dCtx, dWeight: g[p + "to_v.weight"], dBias: nil)
        }
        if let dN {
            layerNormBackward(x: stream, gamma: w[norm + ".weight"], mean: n.mean, rstd: n.rstd, dOut: dN,
                              dx: needInput ? dT : nil, dGamma: g[norm + ".weight"], dBeta: g[norm + ".bias"])
        }
    }
}
