import CDTensor
import Foundation

/// A parameter a model expects: its diffusers key and shape.
public struct ParameterSpec: Sendable, Equatable {
    public let key: String
    public let shape: [Int]
    public init(_ key: String, _ shape: [Int]) { self.key = key; self.shape = shape }
}

/// A model's parameters by diffusers key, checked against its (key, shape) table when loaded.
/// F32 tensors are views of the memory-mapped files (no copy); F16/BF16 are widened once.
public struct Weights: @unchecked Sendable {
    public let tensors: [String: Tensor]

    public init(tensors: [String: Tensor]) { self.tensors = tensors }

    /// The tensor for `key`; a key outside the model's table is a programming error.
    public subscript(_ key: String) -> Tensor {
        guard let t = tensors[key] else { preconditionFailure("no parameter '\(key)' in this model's table") }
        return t
    }

    /// The same weights, every storage marked frozen (`TensorStorage.freeze`), so kernels may keep
    /// derived copies (bf16 convolution weights). Loaded weights never change: parameters that are
    /// trained or edited are owned copies made afterwards (`withOwnedCopies`, `replacingWeights`).
    public func frozen() -> Weights {
        for t in tensors.values { t.storage.freeze() }
        return self
    }

    /// The same weights with `keys` copied into owned, writable memory. Loaded F32 tensors are views
    /// of a read-only file mapping (writing them faults); parameters that will be trained or edited
    /// are copied first, e.g. `UNet2DConditionModel(config:weights: w.withOwnedCopies(of: kvKeys))`.
    public func withOwnedCopies(of keys: [String]) -> Weights {
        var copy = tensors
        for key in keys { copy[key] = self[key].copy() }
        return Weights(tensors: copy)
    }

    /// Loads exactly the parameters in `specs` from `files`. `rename` maps a file's key to a
    /// diffusers key (nil: the file's key is not a parameter of this model and is reported as
    /// unexpected unless `ignore` accepts it). Every problem is collected into one error.
    public static func load(from files: [SafetensorsFile], specs: [ParameterSpec], source: String,
                            rename: (String) -> String? = { $0 }, ignore: (String) -> Bool = { _ in false }) throws -> Weights {
        let expected = Dictionary(specs.map { ($0.key, $0.shape) }, uniquingKeysWith: { a, _ in a })
        var found: [String: (file: SafetensorsFile, name: String)] = [:]
        var unexpected: [String] = []
        for file in files {
            for name in file.names {
                if let key = rename(name), expected[key] != nil {
                    found[key] = (file, name)
                } else if !ignore(name) {
                    unexpected.append(name)
                }
            }
        }
        var tensors: [String: Tensor] = [:]
        var missing: [String] = [], wrong: [String] = []
        for spec in specs {
            guard let (file, name) = found[spec.key] else { missing.append(spec.key); continue }
            let entry = try file.entry(name)
            // A 1×1 conv weight [O, I, 1, 1] stands for a linear [O, I] (LDM's VAE attention,
            // SD1 vs SD2 proj_in/proj_out): same data, another shape.
            let oneByOne = (entry.shape == spec.shape + [1, 1] && spec.shape.count == 2)
                || (spec.shape == entry.shape + [1, 1] && entry.shape.count == 2)
            guard entry.shape == spec.shape || oneByOne else {
                wrong.append("\(name) is \(entry.shape), expected \(spec.shape)")
                continue
            }
            guard entry.dtype.isFloatingPointReadable else {
                wrong.append("\(name) has dtype \(entry.dtype.rawValue), expected F32, F16 or BF16")
                continue
            }
            tensors[spec.key] = try file.tensor(name).reshaped(spec.shape)
        }
        if !missing.isEmpty || !unexpected.isEmpty || !wrong.isEmpty {
            throw ModelError.weightMismatch(source: source, missing: missing, unexpected: unexpected.sorted(), wrongShapes: wrong)
        }
        return Weights(tensors: tensors).frozen()
    }
}

/// The safetensors files of one diffusers component folder (`unet/`, `vae/`, `text_encoder/`):
/// `<base>.safetensors`, or the shards listed in `<base>.safetensors.index.json`.
public func componentFiles(in directory: URL, base: String) throws -> [SafetensorsFile] {
    let fm = FileManager.default
    let single = directory.appendingPathComponent("\(base).safetensors")
    if fm.fileExists(atPath: single.path) { return [try SafetensorsFile(path: single.path)] }
    let index = directory.appendingPathComponent("\(base).safetensors.index.json")
    if fm.fileExists(atPath: index.path) {
        let data: Data
        do { data = try Data(contentsOf: index) } catch {
            throw ModelError.invalidIndex(file: index.path, reason: error.localizedDescription)
        }
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let map = json["weight_map"] as? [String: String] else {
            throw ModelError.invalidIndex(file: index.path, reason: "expected an object with a \"weight_map\" of tensor name → file")
        }
        var shards: [String] = []
        for file in map.values.sorted() where !shards.contains(file) {
            guard !file.contains("/"), !file.hasPrefix(".") else {
                throw ModelError.invalidIndex(file: index.path, reason: "shard name '\(file)' must be a plain file name in the same folder")
            }
            shards.append(file)
        }
        return try shards.map { try SafetensorsFile(path: directory.appendingPathComponent($0).path) }
    }
    for pickle in ["\(base).bin", "pytorch_model.bin", "\(base).ckpt"] {
        let p = directory.appendingPathComponent(pickle)
        if fm.fileExists(atPath: p.path) { throw ModelError.pickleCheckpoint(file: p.path) }
    }
    throw ModelError.missingFile(path: single.path, expected: "\(base).safetensors or \(base).safetensors.index.json")
}

/// Decodes a diffusers/transformers `config.json`.
func readConfig<T: Decodable>(_ type: T.Type, from url: URL) throws -> T {
    let data: Data
    do { data = try Data(contentsOf: url) } catch {
        throw ModelError.missingFile(path: url.path, expected: "a config.json")
    }
    do { return try JSONDecoder().decode(T.self, from: data) } catch let DecodingError.keyNotFound(key, _) {
        throw ModelError.unreadableConfig(file: url.path, reason: "missing field \"\(key.stringValue)\"")
    } catch let DecodingError.typeMismatch(_, ctx) {
        throw ModelError.unreadableConfig(file: url.path, reason: "field \"\(ctx.codingPath.map(\.stringValue).joined(separator: "."))\" has the wrong type")
    } catch {
        throw ModelError.unreadableConfig(file: url.path, reason: "malformed JSON")
    }
}
