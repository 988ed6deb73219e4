/// Errors from reading model folders, configs and checkpoints. Each names the file and what was
/// expected, so a user can tell a wrong file from a corrupt one.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    case missingFile(path: String, expected: String)
    case unreadableConfig(file: String, reason: String)
    case unsupportedConfig(file: String, field: String, value: String, supported: String)
    case pickleCheckpoint(file: String)
    case weightMismatch(source: String, missing: [String], unexpected: [String], wrongShapes: [String])
    case invalidIndex(file: String, reason: String)

    public var description: String {
        switch self {
        case let .missingFile(p, e): return "\(p): not found (expected \(e))"
        case let .unreadableConfig(f, r): return "\(f): cannot read config: \(r)"
        case let .unsupportedConfig(f, field, v, s): return "\(f): \(field) = \(v) is not supported (supported: \(s))"
        case let .pickleCheckpoint(f):
            return "\(f): pickle checkpoints (.ckpt/.pt/.bin) are not loaded (they can run code). Convert it to safetensors first, e.g. with diffusers' conversion scripts or `safetensors.torch.save_file`."
        case let .weightMismatch(s, missing, unexpected, wrong):
            var parts = ["\(s): weights do not match the model"]
            if !missing.isEmpty { parts.append("missing \(missing.count): \(ModelError.list(missing))") }
            if !unexpected.isEmpty { parts.append("unexpected \(unexpected.count): \(ModelError.list(unexpected))") }
            if !wrong.isEmpty { parts.append("wrong shape \(wrong.count): \(ModelError.list(wrong))") }
            return parts.joined(separator: "; ")
        case let .invalidIndex(f, r): return "\(f): invalid sharded-checkpoint index: \(r)"
        }
    }

    /// The first few names of a long list, and how many more.
    static func list(_ names: [String]) -> String {
        let shown = names.prefix(8).joined(separator: ", ")
        return names.count > 8 ? "\(shown), … (\(names.count - 8) more)" : shown
    }
}
