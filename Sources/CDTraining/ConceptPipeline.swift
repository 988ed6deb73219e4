import CDModels
import CDTensor
import Foundation

/// A pipeline plus the base it started from, so that concepts apply against the unmodified base.
///
/// Design: `StableDiffusionPipeline` has no room for extra state, so the base (UNet, tokenizer,
/// token rows at `init`) lives here; `pipeline` is changed in place. Semantics of `apply`:
/// * full weights of diffusers files replace: W = W0 + s·(W − W0) from the **base** W0, exactly W
///   when s = 1, so a second full-weight concept replaces the first (§8.2);
/// * a bundle's `unet_full` tensors (its base is verified) blend like its deltas: the current
///   weights get s·(W − W0); where nothing else has changed the key yet they are set to W0 +
///   s·(W − W0) from the base, so s = 1 on the recorded base still gives W bit for bit;
/// * deltas (A1111, bundles) add to the **current** weights, W += s·Δ, so several blend as the
///   A1111 extension's `<delta:NAME:s>` tags do (§8.3);
/// * a bundle's base_fingerprint is checked against the **base** values of its keys;
/// * tokens get the next ids (49408, 49409, … for SD) and their rows go into `tokenEmbeddings`.
/// Everything is checked before anything changes: a failed `apply` leaves the pipeline as it was.
public final class ConceptPipeline: @unchecked Sendable {
    public let pipeline: StableDiffusionPipeline
    public let baseUNet: UNet2DConditionModel
    public let baseTokenizer: CLIPTokenizer
    public let baseTokenEmbeddings: EmbeddingOverride?

    /// Takes `pipeline`'s current state as the base.
    public init(_ pipeline: StableDiffusionPipeline) {
        self.pipeline = pipeline
        baseUNet = pipeline.models.unet
        baseTokenizer = pipeline.tokenizer
        baseTokenEmbeddings = pipeline.tokenEmbeddings
    }

    public func apply(_ loaded: LoadedConcept, strength: Float = 1) throws {
        guard strength.isFinite else { throw ConceptFormatError.incompatible(file: loaded.source, reason: "strength \(strength) is not finite") }
        let concept = try loaded.resolvingKeys(for: baseUNet.config)
        if let expected = concept.baseFingerprint {
            var base: [String: Tensor] = [:]
            for key in Array(concept.weights.keys) + Array(concept.deltas.keys) { base[key] = baseUNet.weights[key] }
            let actual = TrainedConcept.fingerprint(of: base)
            if actual != expected { throw ConceptFormatError.baseMismatch(file: concept.source, bundle: expected, pipeline: actual) }
        }
        var updates: [String: Tensor] = [:]
        let current = pipeline.models.unet.weights
        for (key, w) in concept.weights {
            let base = baseUNet.weights[key]
            let fromBase = strength == 1 ? w : Self.combine(base, w, strength, subtractBase: true)
            if concept.format == .bundle, !Self.identical(current[key], base) {
                // current + s·(W − W0): another concept already changed this key.
                let delta = Tensor(zeros: w.shape)
                for i in 0..<delta.count { delta.pointer[i] = w.pointer[i] - base.pointer[i] }
                updates[key] = Self.combine(current[key], delta, strength, subtractBase: false)
            } else {
                updates[key] = fromBase
            }
        }
        for (key, d) in concept.deltas { updates[key] = Self.combine(current[key], d, strength, subtractBase: false) }
        let (tokenizer, embeddings) = try addTokens(concept)
        let unet: UNet2DConditionModel
        do { unet = try pipeline.models.unet.replacingWeights(updates) } catch {
            throw ConceptFormatError.incompatible(file: concept.source, reason: "\(error)")
        }
        pipeline.models.unet = unet
        pipeline.tokenizer = tokenizer
        pipeline.tokenEmbeddings = embeddings
    }

    /// Back to the state at `init` (UNet, tokenizer, token rows).
    public func reset() {
        pipeline.models.unet = baseUNet
        pipeline.tokenizer = baseTokenizer
        pipeline.tokenEmbeddings = baseTokenEmbeddings
    }

    /// Whether two tensors hold the same values (the same storage, or equal elementwise).
    static func identical(_ a: Tensor, _ b: Tensor) -> Bool {
        guard a.shape == b.shape else { return false }
        if a.pointer == b.pointer { return true }
        for i in 0..<a.count where a.pointer[i].bitPattern != b.pointer[i].bitPattern { return false }
        return true
    }

    /// x0 + s·(y − x0) when `subtractBase`, else x0 + s·y; elementwise in float32 [shape of x0].
    static func combine(_ x0: Tensor, _ y: Tensor, _ s: Float, subtractBase: Bool) -> Tensor {
        let out = Tensor(zeros: x0.shape)
        let a = x0.pointer, b = y.pointer, o = out.pointer
        for i in 0..<out.count { o[i] = a[i] + s * (subtractBase ? b[i] - a[i] : b[i]) }
        return out
    }

    /// The tokenizer with the concept's tokens added and the token rows [R + n, dim] extended,
    /// computed on copies; throws for a token already there or a row of the wrong width.
    func addTokens(_ concept: LoadedConcept) throws -> (CLIPTokenizer, EmbeddingOverride?) {
        guard !concept.tokens.isEmpty else { return (pipeline.tokenizer, pipeline.tokenEmbeddings) }
        let width = pipeline.models.textEncoder.config.hiddenSize
        var tokenizer = pipeline.tokenizer
        var ids = pipeline.tokenEmbeddings?.rowIds ?? []
        var rows = pipeline.tokenEmbeddings.map { Array($0.rows.buffer) } ?? []
        for (name, row) in concept.tokens {
            guard row.count == width else {
                throw ConceptFormatError.incompatible(file: concept.source, reason: "token '\(name)' has \(row.count) values, the text encoder's width is \(width)")
            }
            if let id = tokenizer.id(of: name) { throw ConceptFormatError.tokenExists(file: concept.source, token: name, id: id) }
            do { ids.append(try tokenizer.addToken(name)) } catch {
                throw ConceptFormatError.incompatible(file: concept.source, reason: "token '\(name)': \(error)")
            }
            rows += Array(row.buffer)
        }
        return (tokenizer, EmbeddingOverride(rowIds: ids, rows: Tensor(rows, shape: [ids.count, width])))
    }
}

extension StableDiffusionPipeline {
    /// Applies one concept in place, taking the current weights as the base (see `ConceptPipeline`
    /// for the rules). To apply several concepts against one base, or to undo, keep a `ConceptPipeline`.
    public func apply(_ concept: LoadedConcept, strength: Float = 1) throws {
        try ConceptPipeline(self).apply(concept, strength: strength)
    }
}
