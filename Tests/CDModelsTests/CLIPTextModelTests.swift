import CDTestSupport
import CDTensor
import Foundation
import Testing
@testable import CDModels

@Suite struct CLIPTextModelTests {
    @Test func lastHiddenStateMatchesTransformers() throws {
        let model = try CLIPTextModel.load(directory: Fixtures.model.appendingPathComponent("text_encoder"))
        let ref = try SafetensorsFile(path: Fixtures.caseFile("text_encoder.safetensors").path)
        let flat = try ref.integers("input_ids")
        let shape = try ref.entry("input_ids").shape
        let ids = (0..<shape[0]).map { Array(flat[($0 * shape[1])..<(($0 + 1) * shape[1])]) }
        var states: [Int: Tensor] = [:]
        let out = model.forward(ids: ids) { states[$0] = $1 }
        expectParity(out, try ref.tensor("last_hidden_state"), "last_hidden_state")
        for l in 0...model.config.numHiddenLayers {
            expectParity(try #require(states[l]), try ref.tensor("hidden_states.\(l)"), "hidden_states.\(l)")
        }
    }

    @Test func keysWithoutTextModelPrefixLoadTheSameWeights() throws {
        let dir = Fixtures.model.appendingPathComponent("text_encoder")
        let original = try SafetensorsFile(path: dir.appendingPathComponent("model.safetensors").path)
        // The other spelling of every key: transformers writes either `text_model.x` or `x`.
        var writer = SafetensorsWriter()
        for name in original.names {
            writer.add(name.hasPrefix("text_model.") ? String(name.dropFirst("text_model.".count)) : "text_model." + name, try original.tensor(name))
        }
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("cd-te-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        try FileManager.default.copyItem(at: dir.appendingPathComponent("config.json"), to: tmp.appendingPathComponent("config.json"))
        try writer.write(to: tmp.appendingPathComponent("model.safetensors").path)
        let a = try CLIPTextModel.load(directory: dir), b = try CLIPTextModel.load(directory: tmp)
        #expect(Set(a.weights.tensors.keys) == Set(b.weights.tensors.keys))
        for (k, t) in a.weights.tensors { #expect(b.weights[k].array == t.array, "\(k) differs") }
    }

    @Test(arguments: [SafetensorsWriter.StoredType.f16, .bf16])
    func halfPrecisionCheckpointsAreWidenedOnLoad(_ type: SafetensorsWriter.StoredType) throws {
        let dir = Fixtures.model.appendingPathComponent("text_encoder")
        let original = try SafetensorsFile(path: dir.appendingPathComponent("model.safetensors").path)
        var writer = SafetensorsWriter()
        for name in original.names { writer.add(name, try original.tensor(name), as: type) }
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("cd-te-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        try FileManager.default.copyItem(at: dir.appendingPathComponent("config.json"), to: tmp.appendingPathComponent("config.json"))
        try writer.write(to: tmp.appendingPathComponent("model.safetensors").path)
        let half = try CLIPTextModel.load(directory: tmp)
        let reread = try SafetensorsFile(path: tmp.appendingPathComponent("model.safetensors").path)
        for name in original.names {
            let key = name.hasPrefix("text_model.") ? name : "text_model." + name
            #expect(half.weights[key].array == (try reread.tensor(name)).array, "\(name)")
            let exact = try original.tensor(name).array
            let widened = half.weights[key].array
            #expect(zip(exact, widened).allSatisfy { abs($0 - $1) <= abs($0) * (type == .f16 ? 1e-3 : 8e-3) + 1e-4 }, "\(name) too far from fp32")
        }
    }

    @Test func mismatchedWeightsListEveryProblem() throws {
        let dir = Fixtures.model.appendingPathComponent("text_encoder")
        let original = try SafetensorsFile(path: dir.appendingPathComponent("model.safetensors").path)
        var writer = SafetensorsWriter()
        for name in original.names where !name.contains("layers.0.mlp.fc1.bias") {
            let t = try original.tensor(name)
            writer.add(name, name.hasSuffix("final_layer_norm.weight") ? Tensor(zeros: [t.count + 1]) : t)
        }
        writer.add("text_model.extra.weight", Tensor(zeros: [2]))
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("cd-te-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        try FileManager.default.copyItem(at: dir.appendingPathComponent("config.json"), to: tmp.appendingPathComponent("config.json"))
        try writer.write(to: tmp.appendingPathComponent("model.safetensors").path)
        #expect {
            _ = try CLIPTextModel.load(directory: tmp)
        } throws: { error in
            guard case let ModelError.weightMismatch(_, missing, unexpected, wrong) = error else { return false }
            return missing == ["text_model.encoder.layers.0.mlp.fc1.bias"] && unexpected == ["text_model.extra.weight"]
                && wrong.count == 1 && wrong[0].contains("final_layer_norm.weight")
        }
    }

    @Test func pickleAndMissingCheckpointsAreRefusedClearly() throws {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("cd-te-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        try FileManager.default.copyItem(at: Fixtures.model.appendingPathComponent("text_encoder/config.json"),
                                         to: tmp.appendingPathComponent("config.json"))
        #expect(throws: ModelError.missingFile(path: tmp.appendingPathComponent("model.safetensors").path,
                                               expected: "model.safetensors or model.safetensors.index.json")) {
            _ = try CLIPTextModel.load(directory: tmp)
        }
        try Data("not really a pickle".utf8).write(to: tmp.appendingPathComponent("pytorch_model.bin"))
        #expect(throws: ModelError.pickleCheckpoint(file: tmp.appendingPathComponent("pytorch_model.bin").path)) {
            _ = try CLIPTextModel.load(directory: tmp)
        }
    }
}
