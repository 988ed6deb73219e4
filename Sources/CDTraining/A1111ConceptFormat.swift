import CDModels
import CDTensor
import Foundation

/// The A1111 Custom Diffusion extension's files (spec §7.6, §7.7):
/// * `NAME.delta.safetensors`: `model.diffusion_model.…` keys (LDM names), values W_trained − W_base
///   stored F16, `__metadata__ = {"json": "{\"meta\": {\"version\": \"0.2.0\"}, \"entries\": {key: \"delta\", …}}"}`.
///   `"delta_factors"` entries (written by `cdtrainerd compress`, read from any file) hold `<key>.US`
///   [out, r] and `<key>.Vh` [r, in] in F16 instead, Δ = US @ Vh (`LowRankDelta`).
/// * `TOKEN.safetensors`: a textual-inversion embedding `{"emb_params": [n, dim]}` (kohya's spelling,
///   which A1111 reads through its single-tensor branch); the embedding is named after the file stem.
public enum A1111ConceptFormat {
    public static let deltaSuffix = ".delta.safetensors"
    public static let version = "0.2.0"

    /// Writes `directory/NAME.delta.safetensors` and one `directory/TOKEN.safetensors` per modifier
    /// token; returns the paths written. Deltas are taken in float32 and rounded to F16 on write.
    @discardableResult
    public static func write(_ concept: TrainedConcept, name: String, to directory: URL) throws -> [URL] {
        let deltaURL = directory.appendingPathComponent(name + deltaSuffix)
        try DiffusersConceptFormat.checkFileSafe(name, file: directory.path)
        let ldm = UNet2DConditionModel.ldmKeyNames(concept.unetConfig)
        let unknown = concept.unet.keys.filter { ldm[$0] == nil }.sorted()
        if !unknown.isEmpty {
            throw ConceptFormatError.unsupportedTensors(file: deltaURL.path, format: "A1111 delta (not parameters of this UNet config)", keys: unknown)
        }
        let entries = try concept.unet.keys.sorted().map { key in
            (key: ldm[key]!, entry: Entry.delta(try difference(concept, key, file: deltaURL.path)))
        }
        return try write(entries, tokens: concept.tokens, to: deltaURL)
    }

    /// What one metadata entry stands for: a plain delta, or its low-rank factors.
    enum Entry {
        case delta(Tensor)
        case factors(LowRankDelta)
    }

    /// Writes the delta file `url` with `entries` (LDM keys, in metadata order; values rounded to
    /// F16) and one `TOKEN.safetensors` embedding per token beside it; returns the paths written.
    /// Token names are checked before anything is written.
    static func write(_ entries: [(key: String, entry: Entry)], tokens: [(name: String, embedding: Tensor)], to url: URL) throws -> [URL] {
        let directory = url.deletingLastPathComponent()
        for token in tokens { try DiffusersConceptFormat.checkFileSafe(token.name, file: directory.path) }
        var writer = SafetensorsWriter()
        var kinds: [String] = []
        for (key, entry) in entries {
            switch entry {
            case let .delta(d):
                writer.add(key, d, as: .f16)
                kinds.append("\(jsonQuoted(key)): \"delta\"")
            case let .factors(f):
                writer.add(key + ".US", f.us, as: .f16)
                writer.add(key + ".Vh", f.vh, as: .f16)
                kinds.append("\(jsonQuoted(key)): \"delta_factors\"")
            }
        }
        // json.dumps spacing, as the extension writes it.
        writer.metadata["json"] = "{\"meta\": {\"version\": \"\(version)\"}, \"entries\": {\(kinds.joined(separator: ", "))}}"
        try DiffusersConceptFormat.createDirectory(directory)
        try DiffusersConceptFormat.wrapWrite(writer, url)
        var written = [url]
        for token in tokens {
            let tokenURL = directory.appendingPathComponent(token.name + ".safetensors")
            try writeEmbedding(token.embedding.reshaped([1, token.embedding.count]), to: tokenURL)
            written.append(tokenURL)
        }
        return written
    }

    /// `{"emb_params": rows [n, dim]}` in F32 (A1111 converts embeddings to float32 anyway).
    public static func writeEmbedding(_ rows: Tensor, to url: URL) throws {
        var w = SafetensorsWriter()
        w.add("emb_params", rows, as: .f32)
        try DiffusersConceptFormat.wrapWrite(w, url)
    }

    /// W_trained − W_base [shape of W] in float32.
    static func difference(_ concept: TrainedConcept, _ key: String, file: String) throws -> Tensor {
        let w = concept.unet[key]!
        guard let w0 = concept.base[key], w0.shape == w.shape else {
            throw ConceptFormatError.malformed(file: file, reason: "no base value of shape \(w.shape) for '\(key)'")
        }
        let d = Tensor(zeros: w.shape)
        for i in 0..<w.count { d.pointer[i] = w.pointer[i] - w0.pointer[i] }
        return d
    }

    /// Deltas by the file's (LDM) key from a delta file whose metadata `json` lists the entries.
    static func readDeltas(_ file: SafetensorsFile, entries: [String: String]) throws -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for (key, kind) in entries.sorted(by: { $0.key < $1.key }) {
            switch kind {
            case "delta":
                out[key] = try ConceptFile.tensor(file, key)
            case "delta_factors":
                let us = try ConceptFile.tensor(file, key + ".US"), vh = try ConceptFile.tensor(file, key + ".Vh")
                guard let factors = LowRankDelta(us: us, vh: vh) else {
                    throw ConceptFormatError.malformed(file: file.path, reason: "'\(key)' factors US \(us.shape) and Vh \(vh.shape) are not [out, r] and [r, in] with r ≥ 1")
                }
                out[key] = factors.product()
            default:
                throw ConceptFormatError.malformed(file: file.path, reason: "entry '\(key)' has kind '\(kind)', expected \"delta\" or \"delta_factors\"")
            }
        }
        if out.isEmpty { throw ConceptFormatError.malformed(file: file.path, reason: "the metadata lists no entries") }
        return out
    }

    /// The `entries` of the metadata `json` string, or nil when the file has no such metadata.
    static func entries(_ file: SafetensorsFile) throws -> [String: String]? {
        guard let json = file.metadata["json"] else { return nil }
        guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let entries = object["entries"] as? [String: Any] else {
            throw ConceptFormatError.malformed(file: file.path, reason: "metadata 'json' is not {\"meta\": …, \"entries\": {…}}")
        }
        var out: [String: String] = [:]
        for (k, v) in entries {
            guard let s = v as? String else { throw ConceptFormatError.malformed(file: file.path, reason: "entry '\(k)' is not a string") }
            out[k] = s
        }
        return out
    }

    static func jsonQuoted(_ s: String) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: [s], options: [.withoutEscapingSlashes])) ?? Data("[\"\"]".utf8)
        return String(decoding: data, as: UTF8.self).dropFirst().dropLast().description
    }
}
