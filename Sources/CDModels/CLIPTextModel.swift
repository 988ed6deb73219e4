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
        let b = ids.count, t = ids.first?.count ?? 0, d = config.hiddenSize
        precondition(ids.allSatisfy { $0.count == t } && t <= config.maxPositionEmbeddings,
                     "text encoder input must be [B, ≤\(config.maxPositionEmbeddings)] token ids")
        // Temporaries come from this thread's reusable scratch arena: no page faults per call.
        return Scratch.with { arena in
            let x = Tensor(zeros: [b, t, d])
            embeddingForward(ids: ids.flatMap { $0 }, table: weights["text_model.embeddings.token_embedding.weight"],
                             override: embeddingOverride, out: x)
            let positions = weights["text_model.embeddings.position_embedding.weight"].slice(0..<t)
            for s in 0..<b { accumulate(positions, into: x[s]) }
            hiddenStates?(0, x.copy())
            for l in 0..<config.numHiddenLayers {
                let mark = arena.mark
                layer(l, x, arena)
                arena.rewind(to: mark)
                hiddenStates?(l + 1, x.copy())
            }
            let out = Tensor(zeros: x.shape)
            layerNorm("text_model.final_layer_norm", x, out, arena)
            return out
        }
    }

    /// x += attn(ln1(x)); x += mlp(ln2(x)), in place on x [B, T, D].
    private func layer(_ l: Int, _ x: Tensor, _ arena: Arena) {
        let p = "text_model.encoder.layers.\(l)."
        let (d, i) = (config.hiddenSize, config.intermediateSize)
        let rows = x.count / d
        let h = arena.tensor(x.shape, zeroed: false)
        layerNorm(p + "layer_norm1", x, h, arena)
        let q = arena.tensor(x.shape, zeroed: false), k = arena.tensor(x.shape, zeroed: false)
        let v = arena.tensor(x.shape, zeroed: false), a = arena.tensor(x.shape, zeroed: false)
        linearForward(x: h, weight: weights[p + "self_attn.q_proj.weight"], bias: weights[p + "self_attn.q_proj.bias"], out: q)
        linearForward(x: h, weight: weights[p + "self_attn.k_proj.weight"], bias: weights[p + "self_attn.k_proj.bias"], out: k)
        linearForward(x: h, weight: weights[p + "self_attn.v_proj.weight"], bias: weights[p + "self_attn.v_proj.bias"], out: v)
        attentionForward(q: q, k: k, v: v, heads: config.numAttentionHeads, causal: true, out: a,
                         logSumExp: arena.tensor([x.shape[0], config.numAttentionHeads, x.shape[1]], zeroed: false))
        linearForward(x: a, weight: weights[p + "self_attn.out_proj.weight"], bias: weights[p + "self_attn.out_proj.bias"], out: h)
        accumulate(h, into: x)

        layerNorm(p + "layer_norm2", x, h, arena)
        let f = arena.tensor([rows, i], zeroed: false), g = arena.tensor([rows, i], zeroed: false)
        linearForward(x: h, weight: weights[p + "mlp.fc1.weight"], bias: weights[p + "mlp.fc1.bias"], out: f)
        activationForward(activation, x: f, out: g)
        linearForward(x: g, weight: weights[p + "mlp.fc2.weight"], bias: weights[p + "mlp.fc2.bias"], out: h)
        accumulate(h, into: x)
    }

    private func layerNorm(_ name: String, _ x: Tensor, _ out: Tensor, _ arena: Arena) {
        let rows = x.count / config.hiddenSize
        layerNormForward(x: x, gamma: weights[name + ".weight"], beta: weights[name + ".bias"], eps: config.layerNormEps,
                         out: out, mean: arena.tensor([rows], zeroed: false), rstd: arena.tensor([rows], zeroed: false))
    }
}
