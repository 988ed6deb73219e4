import CDTensor
import Foundation

/// diffusers' Custom Diffusion output (spec §7.1, §7.2): `pytorch_custom_diffusion_weights.safetensors`
/// with the **full** trained attn2 weights under processor keys, and one `<token>.safetensors` per
/// modifier token holding `{"<new1>": row [dim]}`. Everything F32, metadata `{"format": "pt"}`.
///
/// Key mapping (UNet key ↔ processor key), `P` = e.g. `down_blocks.0.attentions.0.transformer_blocks.0`:
///   `P.attn2.to_k.weight`     ↔ `P.attn2.processor.to_k_custom_diffusion.weight`      [C, cross]
///   `P.attn2.to_v.weight`     ↔ `P.attn2.processor.to_v_custom_diffusion.weight`      [C, cross]
///   `P.attn2.to_q.weight`     ↔ `P.attn2.processor.to_q_custom_diffusion.weight`      [C, C]
///   `P.attn2.to_out.0.weight` ↔ `P.attn2.processor.to_out_custom_diffusion.0.weight`  [C, C]
///   `P.attn2.to_out.0.bias`   ↔ `P.attn2.processor.to_out_custom_diffusion.0.bias`    [C]
/// Nothing else can be stored (diffusers' processor has no other parameters).
public enum DiffusersConceptFormat {
    public static let weightsFileName = "pytorch_custom_diffusion_weights.safetensors"
    /// The same content under the older name; sniffed, since pre-2024 scripts wrote safetensors bytes to it.
    public static let legacyWeightsFileName = "pytorch_custom_diffusion_weights.bin"

    /// (UNet parameter suffix, processor parameter suffix), both after `attn2.`.
    static let parameterNames: [(unet: String, processor: String)] = [
        ("to_k.weight", "processor.to_k_custom_diffusion.weight"),
        ("to_v.weight", "processor.to_v_custom_diffusion.weight"),
        ("to_q.weight", "processor.to_q_custom_diffusion.weight"),
        ("to_out.0.weight", "processor.to_out_custom_diffusion.0.weight"),
        ("to_out.0.bias", "processor.to_out_custom_diffusion.0.bias"),
    ]

    /// `….attn2.to_k.weight` → `….attn2.processor.to_k_custom_diffusion.weight`; nil for a tensor diffusers cannot store.
    public static func processorKey(forUNetKey key: String) -> String? {
        for (u, p) in parameterNames where key.hasSuffix(".attn2." + u) {
            return String(key.dropLast(u.count)) + p
        }
        return nil
    }

    /// The inverse of `processorKey(forUNetKey:)`, keyed on the `…_custom_diffusion…` substring as
    /// diffusers' loader does; nil for anything else (attn1 entries included).
    public static func unetKey(forProcessorKey key: String) -> String? {
        for (u, p) in parameterNames where key.hasSuffix(".attn2." + p) {
            return String(key.dropLast(p.count)) + u
        }
        return nil
    }

    /// Writes the weights file and one token file per modifier token into `directory` (created if
    /// needed); returns the paths written. Throws `unsupportedTensors` naming every trained tensor
    /// outside attn2 q/k/v/out, before writing anything.
    @discardableResult
    public static func write(_ concept: TrainedConcept, to directory: URL) throws -> [URL] {
        let weightsURL = directory.appendingPathComponent(weightsFileName)
        let unsupported = concept.unet.keys.filter { processorKey(forUNetKey: $0) == nil }.sorted()
        if !unsupported.isEmpty {
            throw ConceptFormatError.unsupportedTensors(file: weightsURL.path, format: "diffusers Custom Diffusion weights", keys: unsupported)
        }
        for token in concept.tokens { try checkFileSafe(token.name, file: directory.path) }
        try createDirectory(directory)
        var writer = SafetensorsWriter(metadata: ["format": "pt"])
        for (key, t) in concept.unet { writer.add(processorKey(forUNetKey: key)!, t, as: .f32) }
        try wrapWrite(writer, weightsURL)
        var written = [weightsURL]
        for token in concept.tokens {
            let url = directory.appendingPathComponent(token.name + ".safetensors")
            var w = SafetensorsWriter(metadata: ["format": "pt"])
            w.add(token.name, token.embedding.reshaped([token.embedding.count]), as: .f32)  // 1-D row [dim]
            try wrapWrite(w, url)
            written.append(url)
        }
        return written
    }

    /// Full trained weights by UNet key from a processor-weights file (safetensors bytes, whatever
    /// the extension). attn1 entries are ignored; any other key is an error naming it.
    public static func readWeights(_ file: SafetensorsFile) throws -> [String: Tensor] {
        var out: [String: Tensor] = [:], unknown: [String] = []
        for name in file.names where !name.contains(".attn1.") {
            guard name.contains("_custom_diffusion"), let key = unetKey(forProcessorKey: name) else { unknown.append(name); continue }
            out[key] = try ConceptFile.tensor(file, name)
        }
        if !unknown.isEmpty {
            throw ConceptFormatError.malformed(file: file.path, reason: "tensors that are not Custom Diffusion attn2 processor weights: \(unknown.sorted().joined(separator: ", "))")
        }
        if out.isEmpty { throw ConceptFormatError.malformed(file: file.path, reason: "no attn2 *_custom_diffusion tensors") }
        return out
    }
}

extension DiffusersConceptFormat {
    /// Token names become file names: refuse ones that cannot be (path separators, empty, dot names).
    static func checkFileSafe(_ name: String, file: String) throws {
        if name.isEmpty || name == "." || name == ".." || name.contains("/") || name.contains("\0") {
            throw ConceptFormatError.malformed(file: file, reason: "token name '\(name)' cannot be used as a file name")
        }
    }

    static func createDirectory(_ directory: URL) throws {
        do { try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true) } catch {
            throw ConceptFormatError.writeFailed(file: directory.path, reason: error.localizedDescription)
        }
    }

    /// `SafetensorsWriter.write`, its error re-typed as `ConceptFormatError`.
    static func wrapWrite(_ writer: SafetensorsWriter, _ url: URL) throws {
        do { try writer.write(to: url.path) } catch {
            throw ConceptFormatError.writeFailed(file: url.path, reason: "\(error)")
        }
    }
}
