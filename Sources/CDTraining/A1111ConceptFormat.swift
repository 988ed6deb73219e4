import CDModels
import CDTensor
import Foundation

/// The A1111 Custom Diffusion extension's files (spec §7.6, §7.7):
/// * `NAME.delta.safetensors`: `model.diffusion_model.…` keys (LDM names), values W_trained − W_base
///   stored F16, `__metadata__ = {"json": "{\"meta\": {\"version\": \"0.2.0\"}, \"entries\": {key: \"delta\", …}}"}`.
///   Reading also takes `"delta_factors"` entries: `<key>.US` [out, r] and `<key>.Vh` [r, in], Δ = US @ Vh.
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
        for token in concept.tokens { try DiffusersConceptFormat.checkFileSafe(token.name, file: directory.path) }
        let ldm = UNet2DConditionModel.ldmKeyNames(concept.unetConfig)
        let unknown = concept.unet.keys.filter { ldm[$0] == nil }.sorted()
        if !unknown.isEmpty {
            throw ConceptFormatError.unsupportedTensors(file: deltaURL.path, format: "A1111 delta (not parameters of this UNet config)", keys: unknown)
        }
        var writer = SafetensorsWriter()
        var entries: [String] = []
        for key in concept.unet.keys.sorted() {
            let delta = try difference(concept, key, file: deltaURL.path)
            writer.add(ldm[key]!, delta, as: .f16)
            entries.append("\(jsonQuoted(ldm[key]!)): \"delta\"")
        }
        // json.dumps spacing, as the extension writes it.
        writer.metadata["json"] = "{\"meta\": {\"version\": \"\(version)\"}, \"entries\": {\(entries.joined(separator: ", "))}}"
        try DiffusersConceptFormat.createDirectory(directory)
        try DiffusersConceptFormat.wrapWrite(writer, deltaURL)
        var written = [deltaURL]
        for token in concept.tokens {
            let url = directory.appendingPathComponent(token.name + ".safetensors")
            try writeEmbedding(token.embedding.reshaped([1, token.embedding.count]), to: url)
            written.append(url)
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
                guard us.rank == 2, vh.rank == 2, us.shape[1] == vh.shape[0] else {
                    throw ConceptFormatError.malformed(file: file.path, reason: "'\(key)' factors US \(us.shape) and Vh \(vh.shape) do not multiply")
                }
                out[key] = product(us, vh)
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

    /// US [m, r] @ Vh [r, n] → [m, n], accumulated in float32 as `US.float() @ Vh.float()`.
    static func product(_ a: Tensor, _ b: Tensor) -> Tensor {
        let (m, r, n) = (a.shape[0], a.shape[1], b.shape[1])
        let c = Tensor(zeros: [m, n])
        for i in 0..<m {
            for k in 0..<r {
                let x = a.pointer[i * r + k]
                for j in 0..<n { c.pointer[i * n + j] += x * b.pointer[k * n + j] }
            }
        }
        return c
    }

    static func jsonQuoted(_ s: String) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: [s], options: [.withoutEscapingSlashes])) ?? Data("[\"\"]".utf8)
        return String(decoding: data, as: UTF8.self).dropFirst().dropLast().description
    }
}
