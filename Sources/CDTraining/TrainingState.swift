import CDTensor
import Foundation

/// Checkpoint/resume of a trainer: one safetensors file with every trainable tensor (`param.<name>`)
/// and its AdamW moments (`adam_m.<name>`, `adam_v.<name>`), and in `__metadata__` the step, the
/// position in the sample stream, the base-model fingerprint, the tokens and the tensor list.
/// Restoring it into a trainer built from the same job gives bit-identical continued training.
extension CustomDiffusionTrainer {
    static let stateFormat = "cdtrainer-training-state"
    static let stateVersion = "1"

    /// Writes the state atomically (temporary file, fsync, rename): an existing file at `path`
    /// is replaced only by a complete new one. `metadata` adds entries (e.g. the job id).
    public func saveState(to path: String, metadata extra: [String: String] = [:]) throws {
        var writer = SafetensorsWriter(metadata: extra)
        let meta = stateMetadata
        for (k, v) in meta { writer.metadata[k] = v }
        for slot in optimizer.slots {
            writer.add("param." + slot.name, slot.parameter)
            writer.add("adam_m." + slot.name, slot.m)
            writer.add("adam_v." + slot.name, slot.v)
        }
        try writer.write(to: path)
    }

    /// Restores a state written by `saveState` for the same base model, trainable set and tokens.
    /// Everything is read and checked before anything is changed: a truncated, foreign or
    /// mismatched file throws `TrainingError.invalidState` naming it, and the trainer is untouched.
    public func loadState(from path: String) throws {
        func invalid(_ reason: String) -> TrainingError { .invalidState(file: path, reason: reason) }
        let file: SafetensorsFile
        do { file = try SafetensorsFile(path: path) } catch { throw invalid("not a readable safetensors file (\(error))") }
        let m = file.metadata
        guard m["format"] == Self.stateFormat else {
            throw invalid("not a cdtrainer training state (format \(m["format"].map { "'\($0)'" } ?? "missing"), expected '\(Self.stateFormat)')")
        }
        guard m["version"] == Self.stateVersion else { throw invalid("state version \(m["version"] ?? "?") is not supported (expected \(Self.stateVersion))") }
        let expected = stateMetadata
        for key in ["base_fingerprint", "trainable", "tokens", "tensors"] where m[key] != expected[key] {
            throw invalid("it was written for a different job: \(key) is \(m[key] ?? "missing"), this job has \(expected[key] ?? "")")
        }
        guard let step = m["step"].flatMap(Int.init), step >= 0, let seen = m["samples_seen"].flatMap(Int.init), seen >= 0 else {
            throw invalid("metadata 'step' / 'samples_seen' missing or not a count")
        }
        var loaded: [(AdamW.Slot, Tensor, Tensor, Tensor)] = []
        for slot in optimizer.slots {
            var parts: [Tensor] = []
            for prefix in ["param.", "adam_m.", "adam_v."] {
                let name = prefix + slot.name
                guard file.contains(name) else { throw invalid("tensor '\(name)' is missing") }
                let t: Tensor
                do { t = try file.tensor(name) } catch { throw invalid("tensor '\(name)': \(error)") }
                guard t.shape == slot.parameter.shape else { throw invalid("tensor '\(name)' is \(t.shape), expected \(slot.parameter.shape)") }
                parts.append(t)
            }
            loaded.append((slot, parts[0], parts[1], parts[2]))
        }
        for (slot, p, mom, vel) in loaded {
            slot.parameter.copy(from: p)
            slot.m.copy(from: mom)
            slot.v.copy(from: vel)
        }
        optimizer.step = step
        samplesSeen = seen
    }

    private var stateMetadata: [String: String] {
        func json(_ value: [String]) -> String {
            String(decoding: (try? JSONSerialization.data(withJSONObject: value)) ?? Data("[]".utf8), as: UTF8.self)
        }
        return ["format": Self.stateFormat, "version": Self.stateVersion, "step": String(step), "samples_seen": String(samplesSeen),
                "base_fingerprint": baseFingerprint, "trainable": settings.trainable.name, "tokens": json(tokens.names),
                "tensors": json(optimizer.slots.map(\.name))]
    }
}
