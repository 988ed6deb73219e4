import CDTensor
import Foundation

/// The CLIP text encoder SD conditions on (transformers `CLIPTextModel`): token + position
/// embeddings, pre-LayerNorm transformer layers with causal self-attention, final LayerNorm.
/// Output `last_hidden_state` [B, T, D]; padding positions are ordinary tokens (no attention mask).
public final class CLIPTextModel: @unchecked Sendable {
    public let config: CLIPTextConfig
    public let weights: Weights
    let activation: Activation

    static let prefix = "text_model."

    /// The (key, shape) table, diffusers/transformers names with the `text_model.` prefix.
    public static func parameterSpecs(_ c: CLIPTextConfig) -> [ParameterSpec] {
        let (d, i) = (c.hiddenSize, c.intermediateSize)
        var specs = [ParameterSpec("text_model.embeddings.token_embedding.weight", [c.vocabSize, d]),
                     ParameterSpec("text_model.embeddings.position_embedding.weight", [c.maxPositionEmbeddings, d])]
        for l in 0..<c.numHiddenLayers {
            let p = "text_model.encoder.layers.\(l)."
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                specs += [ParameterSpec(p + "self_attn.\(proj).weight", [d, d]), ParameterSpec(p + "self_attn.\(proj).bias", [d])]
            }
            for norm in ["layer_norm1", "layer_norm2"] {
                specs += [ParameterSpec(p + "\(norm).weight", [d]), ParameterSpec(p + "\(norm).bias", [d])]
            }
            specs += [ParameterSpec(p + "mlp.fc1.weight", [i, d]), ParameterSpec(p + "mlp.fc1.bias", [i]),
                      ParameterSpec(p + "mlp.fc2.weight", [d, i]), ParameterSpec(p + "mlp.fc2.bias", [d])]
        }
        specs += [ParameterSpec("text_model.final_layer_norm.weight", [d]), ParameterSpec("text_model.final_layer_norm.bias", [d])]
        return specs
    }

    public init(config: CLIPTextConfig, weights: Weights, configFile: String = "config") throws {
        try config.validate(file: configFile)
        self.config = config
        self.weights = weights
        self.activation = try config.activation(file: configFile)
    }

    /// Loads a diffusers `text_encoder/` folder (config.json + model.safetensors or shards).
    /// Keys may carry the `text_model.` prefix or not; a stray `position_ids` buffer is ignored.
    public static func load(directory: URL) throws -> CLIPTextModel {
        let configURL = directory.appendingPathComponent("config.json")
        let config = try readConfig(CLIPTextConfig.self, from: configURL)
        try config.validate(file: configURL.path)
        let files = try componentFiles(in: directory, base: "model")
        let weights = try load(files: files, config: config, source: directory.path)
        return try CLIPTextModel(config: config, weights: weights, configFile: configURL.path)
    }

    /// Loads the text-encoder tensors from already opened files; `stripping` removes a prefix
    /// first (e.g. `cond_stage_model.transformer.` in a single-file checkpoint).
    static func load(files: [SafetensorsFile], config: CLIPTextConfig, source: String, stripping outer: String = "") throws -> Weights {
        try Weights.load(from: files, specs: parameterSpecs(config), source: source, rename: { name in
            guard name.hasPrefix(outer) else { return nil }
            let inner = String(name.dropFirst(outer.count))
            return inner.hasPrefix(prefix) ? inner : prefix + inner
        }, ignore: { name in
            name.hasSuffix("embeddings.position_ids") || (!outer.isEmpty && !name.hasPrefix(outer))
        })
    }

    /// `last_hidden_state` for token ids [B][T] (T ≤ max positions). `embeddingOverride` supplies
    /// rows for ids it lists (trained modifier tokens, or ids past the table for added tokens).
    /// `hiddenStates`, when given, receives (0, embeddings) and (l + 1, output of layer l).
    public func forward(ids: [[Int]], embeddingOverride: EmbeddingOverride? = nil,
                        hiddenStates: ((Int, Tensor) -> Void)? = nil) -> Tensor {
        // Temporaries come from this thread's reusable scratch arena: no page faults per call.
        Scratch.with { arena in
            let out = Tensor(zeros: [ids.count, ids.first?.count ?? 0, config.hiddenSize])
            _ = run(ids: ids, override: embeddingOverride, out: out, keep: nil, tmp: arena, hiddenStates: hiddenStates)
            return out
        }
    }

    /// Training forward: `last_hidden_state` and what backward needs, both in `arena`.
    public func trainingForward(ids: [[Int]], embeddingOverride: EmbeddingOverride, arena: Arena) -> (Tensor, CLIPTape) {
        let out = arena.tensor([ids.count, ids.first?.count ?? 0, config.hiddenSize], zeroed: false)
        let tape = Scratch.with { tmp in run(ids: ids, override: embeddingOverride, out: out, keep: arena, tmp: tmp, hiddenStates: nil)! }
        return (out, tape)
    }

    /// Backward of `trainingForward` for dOut [B, T, D] into the override rows' gradient dRows
    /// [R, D]. Every weight of the encoder is frozen (only the modifier-token rows train), so no
    /// weight gradient is computed.
    public func backward(_ tape: CLIPTape, dOut: Tensor, dRows: Tensor) {
        Scratch.with { tmp in
            let dx = tmp.tensor(dOut.shape)
            let f = tape.final
            layerNormBackward(x: f.x, gamma: weights["text_model.final_layer_norm.weight"], mean: f.mean, rstd: f.rstd,
                              dOut: dOut, dx: dx, dGamma: nil, dBeta: nil)
            for l in (0..<config.numHiddenLayers).reversed() { layerBackward(l, tape.layers[l], dx: dx, tmp) }
            embeddingBackward(ids: tape.ids, dOut: dx, override: tape.override, dRows: dRows)
        }
    }

    /// The encoder pass; with `keep` (training) every layer's saved state goes to a tape there.
    private func run(ids: [[Int]], override: EmbeddingOverride?, out: Tensor, keep: Arena?, tmp: Arena,
                     hiddenStates: ((Int, Tensor) -> Void)?) -> CLIPTape? {
        let b = ids.count, t = ids.first?.count ?? 0, d = config.hiddenSize
        precondition(ids.allSatisfy { $0.count == t } && t <= config.maxPositionEmbeddings,
                     "text encoder input must be [B, ≤\(config.maxPositionEmbeddings)] token ids")
        let flat = ids.flatMap { $0 }
        let x = (keep ?? tmp).tensor([b, t, d], zeroed: false)
        embeddingForward(ids: flat, table: weights["text_model.embeddings.token_embedding.weight"], override: override, out: x)
        let positions = weights["text_model.embeddings.position_embedding.weight"].slice(0..<t)
        for s in 0..<b { accumulate(positions, into: x[s]) }
        hiddenStates?(0, x.copy())
        var saved: [CLIPTape.Layer] = []
        for l in 0..<config.numHiddenLayers {
            let mark = tmp.mark
            if let layer = layer(l, x, keep: keep, tmp: tmp) { saved.append(layer) }
            tmp.rewind(to: mark)
            hiddenStates?(l + 1, x.copy())
        }
        let rows = x.count / d, stats = keep ?? tmp
        let mean = stats.tensor([rows], zeroed: false), rstd = stats.tensor([rows], zeroed: false)
        layerNormForward(x: x, gamma: weights["text_model.final_layer_norm.weight"], beta: weights["text_model.final_layer_norm.bias"],
                         eps: config.layerNormEps, out: out, mean: mean, rstd: rstd)
        guard keep != nil, let override else { return nil }
        return CLIPTape(ids: flat, override: override, layers: saved, final: (x, mean, rstd))
    }

    /// x += attn(ln1(x)); x += mlp(ln2(x)), in place on x [B, T, D]. With `keep`, the layer's
    /// input, norms, attention internals and MLP pre-activation are kept for backward.
    private func layer(_ l: Int, _ x: Tensor, keep: Arena?, tmp: Arena) -> CLIPTape.Layer? {
        let p = "text_model.encoder.layers.\(l)."
        let (d, i, heads) = (config.hiddenSize, config.intermediateSize, config.numAttentionHeads)
        let rows = x.count / d
        let save = keep ?? tmp
        let input = keep.map { k in let c = k.tensor(x.shape, zeroed: false); c.copy(from: x); return c }
        let h = tmp.tensor(x.shape, zeroed: false)
        let ln1 = (mean: save.tensor([rows], zeroed: false), rstd: save.tensor([rows], zeroed: false))
        layerNormForward(x: x, gamma: weights[p + "layer_norm1.weight"], beta: weights[p + "layer_norm1.bias"], eps: config.layerNormEps,
                         out: h, mean: ln1.mean, rstd: ln1.rstd)
        let q = save.tensor(x.shape, zeroed: false), k = save.tensor(x.shape, zeroed: false)
        let v = save.tensor(x.shape, zeroed: false), a = save.tensor(x.shape, zeroed: false)
        let lse = save.tensor([x.shape[0], heads, x.shape[1]], zeroed: false)
        linearForward(x: h, weight: weights[p + "self_attn.q_proj.weight"], bias: weights[p + "self_attn.q_proj.bias"], out: q)
        linearForward(x: h, weight: weights[p + "self_attn.k_proj.weight"], bias: weights[p + "self_attn.k_proj.bias"], out: k)
        linearForward(x: h, weight: weights[p + "self_attn.v_proj.weight"], bias: weights[p + "self_attn.v_proj.bias"], out: v)
        attentionForward(q: q, k: k, v: v, heads: heads, causal: true, out: a, logSumExp: lse)
        linearForward(x: a, weight: weights[p + "self_attn.out_proj.weight"], bias: weights[p + "self_attn.out_proj.bias"], out: h)
        accumulate(h, into: x)
        let middle = keep.map { k in let c = k.tensor(x.shape, zeroed: false); c.copy(from: x); return c }

        let ln2 = (mean: save.tensor([rows], zeroed: false), rstd: save.tensor([rows], zeroed: false))
        layerNormForward(x: x, gamma: weights[p + "layer_norm2.weight"], beta: weights[p + "layer_norm2.bias"], eps: config.layerNormEps,
                         out: h, mean: ln2.mean, rstd: ln2.rstd)
        let f = save.tensor([rows, i], zeroed: false), g = tmp.tensor([rows, i], zeroed: false)
        linearForward(x: h, weight: weights[p + "mlp.fc1.weight"], bias: weights[p + "mlp.fc1.bias"], out: f)
        activationForward(activation, x: f, out: g)
        linearForward(x: g, weight: weights[p + "mlp.fc2.weight"], bias: weights[p + "mlp.fc2.bias"], out: h)
        accumulate(h, into: x)
        guard let input, let middle else { return nil }
        return CLIPTape.Layer(input: input, ln1: ln1, q: q, k: k, v: v, attention: a, lse: lse, middle: middle, ln2: ln2, fc1: f)
    }

    /// dx: gradient of the layer's output on entry, of its input on exit.
    private func layerBackward(_ l: Int, _ s: CLIPTape.Layer, dx: Tensor, _ tmp: Arena) {
        let p = "text_model.encoder.layers.\(l)."
        let (d, i, heads) = (config.hiddenSize, config.intermediateSize, config.numAttentionHeads)
        let rows = dx.count / d
        let mark = tmp.mark
        defer { tmp.rewind(to: mark) }
        // x_out = middle + fc2(act(fc1(ln2(middle))))
        let dg = tmp.tensor([rows, i]), df = tmp.tensor([rows, i]), dh = tmp.tensor(dx.shape)
        linearBackward(x: shapeOnly([rows, i], tmp), weight: weights[p + "mlp.fc2.weight"], dOut: dx, dx: dg, dWeight: nil, dBias: nil)
        activationBackward(activation, x: s.fc1, dOut: dg, dx: df)
        linearBackward(x: shapeOnly(dx.shape, tmp), weight: weights[p + "mlp.fc1.weight"], dOut: df, dx: dh, dWeight: nil, dBias: nil)
        layerNormBackward(x: s.middle, gamma: weights[p + "layer_norm2.weight"], mean: s.ln2.mean, rstd: s.ln2.rstd, dOut: dh,
                          dx: dx, dGamma: nil, dBeta: nil)
        // middle = input + out_proj(attention(q_proj(h), k_proj(h), v_proj(h))), h = ln1(input)
        let da = tmp.tensor(dx.shape), dq = tmp.tensor(dx.shape), dk = tmp.tensor(dx.shape), dv = tmp.tensor(dx.shape)
        linearBackward(x: s.attention, weight: weights[p + "self_attn.out_proj.weight"], dOut: dx, dx: da, dWeight: nil, dBias: nil)
        attentionBackward(q: s.q, k: s.k, v: s.v, heads: heads, causal: true, out: s.attention, logSumExp: s.lse, dOut: da,
                          dq: dq, dk: dk, dv: dv)
        let dh1 = tmp.tensor(dx.shape)
        for (grad, name) in [(dq, "q_proj"), (dk, "k_proj"), (dv, "v_proj")] {
            linearBackward(x: shapeOnly(dx.shape, tmp), weight: weights[p + "self_attn.\(name).weight"], dOut: grad, dx: dh1,
                           dWeight: nil, dBias: nil)
        }
        layerNormBackward(x: s.input, gamma: weights[p + "layer_norm1.weight"], mean: s.ln1.mean, rstd: s.ln1.rstd, dOut: dh1,
                          dx: dx, dGamma: nil, dBeta: nil)
    }
}

/// What a text-encoder training forward keeps (in the caller's arena) for its backward.
public final class CLIPTape: @unchecked Sendable {
    struct Layer {
        let input: Tensor
        let ln1: (mean: Tensor, rstd: Tensor)
        let q: Tensor, k: Tensor, v: Tensor, attention: Tensor, lse: Tensor
        let middle: Tensor
        let ln2: (mean: Tensor, rstd: Tensor)
        let fc1: Tensor
    }
    let ids: [Int]
    let override: EmbeddingOverride
    let layers: [Layer]
    let final: (x: Tensor, mean: Tensor, rstd: Tensor)

    init(ids: [Int], override: EmbeddingOverride, layers: [Layer], final: (x: Tensor, mean: Tensor, rstd: Tensor)) {
        self.ids = ids
        self.override = override
        self.layers = layers
        self.final = final
    }
}
