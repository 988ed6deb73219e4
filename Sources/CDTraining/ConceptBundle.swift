import CDTensor
import Foundation

/// cdtrainer's own concept file: one safetensors holding
/// * `unet.<diffusers key>`: F32 delta d [shape of W] chosen so that fl(W0 + d) == W bit for bit;
/// * `unet_full.<diffusers key>`: F32 trained value W, for a tensor where some element has no such d
///   (non-finite values, −0 over +0, or W0 and W of opposite sign with |W0 − W| in a higher binade
///   than W, which Adam steps across zero produce: 1 of 20 tensors of the fixture's cd_train);
///   listed in metadata `full_tensors`, applied like a diffusers full weight;
/// * `token.<name>`: F32 embedding row [dim], id order given by metadata `tokens`;
/// * `__metadata__`: `format` "cdtrainer-concept", `version` "1", `base_fingerprint`
///   (`TrainedConcept.fingerprint` of the base values of every unet/unet_full key), `tokens` and
///   `full_tensors` (JSON arrays), `trainable`, `step`, `settings` (a JSON object string).
/// Deltas rather than full values so that a bundle blends like an A1111 delta (W0 + s·d), while
/// s = 1 on the recorded base reproduces the trained weights exactly.
public enum ConceptBundle {
    public static let formatName = "cdtrainer-concept"
    public static let version = "1"

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
        let fingerprint = TrainedConcept.fingerprint(of: base)
        var writer = SafetensorsWriter()
        var full: [String] = []
        for key in keys {
            if let d = exactDelta(concept.unet[key]!, base: base[key]!) {
                writer.add("unet." + key, d, as: .f32)
            } else {
                writer.add("unet_full." + key, concept.unet[key]!, as: .f32)
                full.append(key)
            }
        }
        if Set(concept.tokens.map(\.name)).count != concept.tokens.count {
            throw ConceptFormatError.malformed(file: url.path, reason: "a token name appears twice in \(concept.tokens.map(\.name))")
        }
        for token in concept.tokens {
            writer.add("token." + token.name, token.embedding.reshaped([token.embedding.count]), as: .f32)
        }
        writer.metadata = [
            "format": formatName, "version": version, "base_fingerprint": fingerprint,
            "tokens": jsonArray(concept.tokens.map(\.name)), "full_tensors": jsonArray(full),
            "trainable": concept.trainable, "step": String(concept.step), "settings": concept.settings,
        ]
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
        guard meta["version"] == version else {
            throw ConceptFormatError.malformed(file: file.path, reason: "bundle version \(meta["version"] ?? "(none)"), this build reads version \(version)")
        }
        guard let fingerprint = meta["base_fingerprint"], fingerprint.count == 64 else {
            throw ConceptFormatError.malformed(file: file.path, reason: "metadata base_fingerprint missing or not a SHA-256 hex string")
        }
        let tokenNames = try stringArray(meta["tokens"], "tokens", file.path)
        let fullKeys = Set(try stringArray(meta["full_tensors"] ?? "[]", "full_tensors", file.path))
        var concept = LoadedConcept(format: .bundle, source: file.path)
        concept.baseFingerprint = fingerprint
        concept.metadata = meta.filter { ["trainable", "step", "settings"].contains($0.key) }
        var tokenRows: [String: Tensor] = [:], foreign: [String] = []
        for name in file.names {
            if name.hasPrefix("unet.") {
                concept.deltas[String(name.dropFirst(5))] = try ConceptFile.tensor(file, name)
            } else if name.hasPrefix("unet_full.") {
                concept.weights[String(name.dropFirst(10))] = try ConceptFile.tensor(file, name)
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
        if !Set(concept.weights.keys).isDisjoint(with: concept.deltas.keys) {
            throw ConceptFormatError.malformed(file: file.path, reason: "a key is stored both as delta and as full value")
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
