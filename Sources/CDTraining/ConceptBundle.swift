import CDTensor
import Foundation

/// cdtrainer's own concept file: one safetensors holding
/// * `unet.<diffusers key>`: F32 delta d [shape of W] chosen so that fl(W0 + d) == W bit for bit;
/// * `unet_full.<diffusers key>`: F32 trained value W, for a tensor where some element has no such d
///   (non-finite values, −0 over +0, or W0 and W of opposite sign with |W0 − W| in a higher binade
///   than W, which Adam steps across zero produce: 1 of 20 tensors of the fixture's cd_train);
///   listed in metadata `full_tensors`, applied like a diffusers full weight;
/// * `unet_us.<diffusers key>` F32 [out, r] and `unet_vh.<diffusers key>` F32 [r, in]: a delta
///   kept as low-rank factors, d = us · vh (`LowRankDelta`, written by `cdtrainerd compress`);
///   listed in metadata `factored_tensors`;
/// * `token.<name>`: F32 embedding row [dim], id order given by metadata `tokens`;
/// * `__metadata__`: `format` "cdtrainer-concept", `version` "1" (or "2" when the file holds factors,
///   so that builds without factor support refuse it by its version), `base_fingerprint`
///   (`TrainedConcept.fingerprint` of the base values of every unet/unet_full/factored key), `tokens`,
///   `full_tensors` and, with factors, `factored_tensors` (JSON arrays); from training `trainable`,
///   `step`, `settings` (a JSON object string); from compression `compression_ratio`.
/// Deltas rather than full values so that a bundle blends like an A1111 delta (W0 + s·d), while
/// s = 1 on the recorded base reproduces the trained weights exactly.
public enum ConceptBundle {
    public static let formatName = "cdtrainer-concept"
    public static let version = "1"
    /// The version of a bundle with factored deltas.
    public static let factoredVersion = "2"

    /// Writes the bundle atomically. Throws when a trained tensor has no base value of its shape, or
    /// when `concept.baseFingerprint` is not the fingerprint of `concept.base` (an inconsistent
    /// concept). The metadata's base_fingerprint covers exactly the stored keys, as `apply` checks
    /// it; it equals `concept.baseFingerprint` when `base` holds just the trained keys.
    public static func write(_ concept: TrainedConcept, to url: URL) throws {
        guard TrainedConcept.fingerprint(of: concept.base) == concept.baseFingerprint else {
            throw ConceptFormatError.malformed(file: url.path, reason: "the concept's base_fingerprint \(concept.baseFingerprint) is not that of its base values")
        }
        let keys = concept.unet.keys.sorted()
        var base: [String: Tensor] = [:]
        for key in keys {
            guard let w0 = concept.base[key], w0.shape == concept.unet[key]!.shape else {
                throw ConceptFormatError.malformed(file: url.path, reason: "no base value of shape \(concept.unet[key]!.shape) for '\(key)'")
            }
            base[key] = w0
        }
        var contents = Contents(baseFingerprint: TrainedConcept.fingerprint(of: base), tokens: concept.tokens)
        for key in keys {
            if let d = exactDelta(concept.unet[key]!, base: base[key]!) {
                contents.deltas[key] = d
            } else {
                contents.full[key] = concept.unet[key]!
            }
        }
        contents.metadata = ["trainable": concept.trainable, "step": String(concept.step), "settings": concept.settings]
        try write(contents, to: url)
    }

    /// What a bundle file holds, by diffusers key; a key is in at most one of the three maps.
    struct Contents {
        var deltas: [String: Tensor] = [:]
        var full: [String: Tensor] = [:]
        var factors: [String: LowRankDelta] = [:]
        /// Of the base values of every key of the three maps.
        var baseFingerprint: String
        var tokens: [(name: String, embedding: Tensor)]
        /// Extra metadata fields (`trainable`, `step`, `settings`, `compression_ratio`).
        var metadata: [String: String] = [:]
    }

    /// Writes `contents` atomically; the version is `factoredVersion` exactly when it has factors.
    static func write(_ contents: Contents, to url: URL) throws {
        var writer = SafetensorsWriter()
        for (key, d) in contents.deltas { writer.add("unet." + key, d, as: .f32) }
        for (key, w) in contents.full { writer.add("unet_full." + key, w, as: .f32) }
        for (key, f) in contents.factors {
            writer.add("unet_us." + key, f.us, as: .f32)
            writer.add("unet_vh." + key, f.vh, as: .f32)
        }
        if Set(contents.tokens.map(\.name)).count != contents.tokens.count {
            throw ConceptFormatError.malformed(file: url.path, reason: "a token name appears twice in \(contents.tokens.map(\.name))")
        }
        for token in contents.tokens {
            writer.add("token." + token.name, token.embedding.reshaped([token.embedding.count]), as: .f32)
        }
        writer.metadata = contents.metadata.merging([
            "format": formatName, "version": contents.factors.isEmpty ? version : factoredVersion,
            "base_fingerprint": contents.baseFingerprint, "tokens": jsonArray(contents.tokens.map(\.name)),
            "full_tensors": jsonArray(contents.full.keys.sorted()),
        ]) { _, fixed in fixed }
        if !contents.factors.isEmpty { writer.metadata["factored_tensors"] = jsonArray(contents.factors.keys.sorted()) }
        try DiffusersConceptFormat.wrapWrite(writer, url)
    }

    /// d with fl(w0 + d) == w for every element (bit patterns compared), or nil if some element has none.
    /// d = w − w0 is exact when w0/2 ≤ w ≤ 2·w0 (Sterbenz); otherwise it was rounded and fl(w0 + d)
    /// can miss w by an ulp, so d is nudged a few ulps either way until the sum lands on w. (The
    /// nudge helps where w is a power of two, whose rounding interval is twice as wide above; elsewhere
    /// the rounded difference is already the closest candidate.)
    public static func exactDelta(_ w: Tensor, base w0: Tensor) -> Tensor? {
        let d = Tensor(zeros: w.shape)
        for i in 0..<w.count {
            guard let x = exactDelta(w.pointer[i], base: w0.pointer[i]) else { return nil }
            d.pointer[i] = x
        }
        return d
    }

    static func exactDelta(_ w: Float, base w0: Float) -> Float? {
        guard w.isFinite, w0.isFinite else { return nil }
        if w0.bitPattern == (-Float.zero).bitPattern { return w }  // −0 + w == w for every w, −0 included
        let d = w - w0
        if (w0 + d).bitPattern == w.bitPattern { return d }
        var up = d, down = d
        for _ in 0..<4 {
            up = up.nextUp
            down = down.nextDown
            if (w0 + up).bitPattern == w.bitPattern { return up }
            if (w0 + down).bitPattern == w.bitPattern { return down }
        }
        return nil
    }

    /// Reads a bundle (already recognised by its `format` metadata) into a `LoadedConcept`.
    static func read(_ file: SafetensorsFile) throws -> LoadedConcept {
        let meta = file.metadata
        guard meta["version"] == version || meta["version"] == factoredVersion else {
            throw ConceptFormatError.malformed(file: file.path, reason: "bundle version \(meta["version"] ?? "(none)"), this build reads versions \(version) and \(factoredVersion)")
        }
        guard let fingerprint = meta["base_fingerprint"], fingerprint.count == 64 else {
            throw ConceptFormatError.malformed(file: file.path, reason: "metadata base_fingerprint missing or not a SHA-256 hex string")
        }
        let tokenNames = try stringArray(meta["tokens"], "tokens", file.path)
        let fullKeys = Set(try stringArray(meta["full_tensors"] ?? "[]", "full_tensors", file.path))
        let factoredKeys = Set(try stringArray(meta["factored_tensors"] ?? "[]", "factored_tensors", file.path))
        var concept = LoadedConcept(format: .bundle, source: file.path)
        concept.baseFingerprint = fingerprint
        concept.metadata = meta.filter { ["trainable", "step", "settings", "compression_ratio"].contains($0.key) }
        var tokenRows: [String: Tensor] = [:], us: [String: Tensor] = [:], vh: [String: Tensor] = [:], foreign: [String] = []
        for name in file.names {
            if name.hasPrefix("unet.") {
                concept.deltas[String(name.dropFirst(5))] = try ConceptFile.tensor(file, name)
            } else if name.hasPrefix("unet_full.") {
                concept.weights[String(name.dropFirst(10))] = try ConceptFile.tensor(file, name)
            } else if name.hasPrefix("unet_us.") {
                us[String(name.dropFirst(8))] = try ConceptFile.tensor(file, name)
            } else if name.hasPrefix("unet_vh.") {
                vh[String(name.dropFirst(8))] = try ConceptFile.tensor(file, name)
            } else if name.hasPrefix("token.") {
                tokenRows[String(name.dropFirst(6))] = try ConceptFile.tensor(file, name)
            } else {
                foreign.append(name)
            }
        }
        if !foreign.isEmpty { throw ConceptFormatError.malformed(file: file.path, reason: "unexpected tensors \(foreign.sorted())") }
        if Set(concept.weights.keys) != fullKeys {
            throw ConceptFormatError.malformed(file: file.path, reason: "full_tensors \(fullKeys.sorted()) do not match the unet_full tensors \(concept.weights.keys.sorted())")
        }
        guard Set(us.keys) == factoredKeys, Set(vh.keys) == factoredKeys else {
            throw ConceptFormatError.malformed(file: file.path, reason: "factored_tensors \(factoredKeys.sorted()) do not match the unet_us tensors \(us.keys.sorted()) and unet_vh tensors \(vh.keys.sorted())")
        }
        if !Set(concept.weights.keys).isDisjoint(with: concept.deltas.keys) || !factoredKeys.isDisjoint(with: Set(concept.deltas.keys).union(concept.weights.keys)) {
            throw ConceptFormatError.malformed(file: file.path, reason: "a key is stored in more than one form (delta, full value, factors)")
        }
        for key in factoredKeys.sorted() {  // the applied delta is the float32 product, as for an A1111 file
            guard let factors = LowRankDelta(us: us[key]!, vh: vh[key]!) else {
                throw ConceptFormatError.malformed(file: file.path, reason: "'\(key)' factors unet_us \(us[key]!.shape) and unet_vh \(vh[key]!.shape) are not [out, r] and [r, in] with r ≥ 1")
            }
            concept.deltas[key] = factors.product()
        }
        guard Set(tokenRows.keys) == Set(tokenNames), tokenNames.count == tokenRows.count else {
            throw ConceptFormatError.malformed(file: file.path, reason: "metadata tokens \(tokenNames) do not match the token tensors \(tokenRows.keys.sorted())")
        }
        concept.tokens = try tokenNames.map { name in
            let row = tokenRows[name]!
            guard row.rank == 1 else { throw ConceptFormatError.malformed(file: file.path, reason: "token '\(name)' has shape \(row.shape), expected [dim]") }
            return (name, row)
        }
        return concept
    }

    static func jsonArray(_ items: [String]) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: items, options: [.withoutEscapingSlashes])) ?? Data("[]".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    static func stringArray(_ json: String?, _ field: String, _ file: String) throws -> [String] {
        guard let json, let items = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String] else {
            throw ConceptFormatError.malformed(file: file, reason: "metadata '\(field)' missing or not a JSON array of strings")
        }
        return items
    }
}
