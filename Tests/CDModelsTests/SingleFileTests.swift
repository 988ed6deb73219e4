import CDTestSupport
import CDTensor
import Foundation
import Testing
@testable import CDModels

@Suite struct SingleFileTests {
    @Test func singleFileAndFolderGiveBitIdenticalWeights() throws {
        let folder = try StableDiffusionModels.loadFolder(Fixtures.model)
        let single = try StableDiffusionModels.load(Fixtures.directory.appendingPathComponent("model-ldm.safetensors").path,
                                                    configs: Fixtures.model.path)
        for (name, a, b) in [("unet", folder.unet.weights, single.unet.weights), ("vae", folder.vae.weights, single.vae.weights),
                             ("text_encoder", folder.textEncoder.weights, single.textEncoder.weights)] {
            #expect(Set(a.tensors.keys) == Set(b.tensors.keys), "\(name) keys differ")
            for (key, t) in a.tensors {
                guard let u = b.tensors[key] else { continue }
                #expect(t.shape == u.shape && t.array == u.array, "\(name) \(key) differs")
            }
        }
    }

    /// The rule-based LDM names equal the published SD1.5 / SD2.1 / VAE key maps (spec §6).
    @Test(arguments: ["sd15_unet_keymap.tsv", "sd21_unet_keymap.tsv", "vae_keymap.tsv"])
    func keyMapsMatchPublishedTables(_ file: String) throws {
        let url = Fixtures.keymaps.appendingPathComponent(file)
        let rows = try String(contentsOf: url, encoding: .utf8).split(separator: "\n").dropFirst().map { $0.split(separator: "\t").map(String.init) }
        var expected: [String: String] = [:]
        for r in rows { expected[r[2]] = r[0] }
        let ours: [String: String]
        if file.hasPrefix("vae") {
            ours = LDMKeyMap.vae(.sd)
        } else {
            var c = UNet2DConditionConfig.sd15
            if file.hasPrefix("sd21") {  // SD2.1: head dims 64 (5, 10, 20, 20 heads), OpenCLIP-H context, linear projections
                c.attentionHeadDim = .each([5, 10, 20, 20]); c.crossAttentionDim = 1024; c.useLinearProjection = true
            }
            ours = LDMKeyMap.unet(c)
        }
        #expect(ours.count == expected.count, "\(ours.count) keys, table has \(expected.count)")
        for (key, ldm) in expected { #expect(ours[key] == ldm, "\(key): \(ours[key] ?? "none") vs \(ldm)") }
    }

    @Test func pickleAndBrokenCheckpointsFailClearly() throws {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("cd-sf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let ckpt = tmp.appendingPathComponent("model.ckpt")
        try Data([0x80, 0x02]).write(to: ckpt)
        #expect(throws: ModelError.pickleCheckpoint(file: ckpt.path)) { _ = try StableDiffusionModels.load(ckpt.path) }

        // SD 2.x single files (OpenCLIP text encoder) are named as such, not as missing keys.
        let source = try SafetensorsFile(path: Fixtures.directory.appendingPathComponent("model-ldm.safetensors").path)
        var sd2 = SafetensorsWriter()
        for name in source.names {
            sd2.add(name.replacingOccurrences(of: "cond_stage_model.transformer.", with: "cond_stage_model.model."), try source.tensor(name))
        }
        let sd2Path = tmp.appendingPathComponent("sd2.safetensors").path
        try sd2.write(to: sd2Path)
        #expect { _ = try StableDiffusionModels.load(sd2Path, configs: Fixtures.model.path) } throws: { error in
            "\(error)".contains("OpenCLIP") && "\(error)".contains("diffusers folder")
        }

        // EMA-only files say so instead of listing every UNet key as missing.
        var ema = SafetensorsWriter()
        for name in source.names {
            ema.add(name.replacingOccurrences(of: "model.diffusion_model.", with: "model_ema.diffusion_model"), try source.tensor(name))
        }
        let emaPath = tmp.appendingPathComponent("ema.safetensors").path
        try ema.write(to: emaPath)
        #expect { _ = try StableDiffusionModels.load(emaPath, configs: Fixtures.model.path) } throws: { "\($0)".contains("EMA") }

        // Truncated: the header survives, the data does not.
        let original = try Data(contentsOf: Fixtures.directory.appendingPathComponent("model-ldm.safetensors"))
        let cut = tmp.appendingPathComponent("cut.safetensors")
        try original.prefix(original.count / 2).write(to: cut)
        #expect(throws: SafetensorsError.self) { _ = try StableDiffusionModels.load(cut.path, configs: Fixtures.model.path) }

        // Another architecture's config: every mismatch is listed.
        let other = tmp.appendingPathComponent("configs")
        try FileManager.default.copyItem(at: Fixtures.model, to: other)
        var unet = try JSONSerialization.jsonObject(with: Data(contentsOf: other.appendingPathComponent("unet/config.json"))) as! [String: Any]
        unet["layers_per_block"] = (unet["layers_per_block"] as! Int) + 1
        try JSONSerialization.data(withJSONObject: unet).write(to: other.appendingPathComponent("unet/config.json"))
        #expect {
            _ = try StableDiffusionModels.load(Fixtures.directory.appendingPathComponent("model-ldm.safetensors").path, configs: other.path)
        } throws: { error in
            guard case let ModelError.weightMismatch(_, missing, unexpected, _) = error else { return false }
            return !missing.isEmpty && !unexpected.isEmpty
        }
    }
}

@Suite struct FolderLoadingTests {
    func copyOfFixtureModel() throws -> URL {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("cd-model-\(UUID().uuidString)")
        try FileManager.default.copyItem(at: Fixtures.model, to: tmp)
        return tmp
    }

    @Test func modelIndexIsReadAndChecked() throws {
        let index = try ModelIndex(url: Fixtures.model.appendingPathComponent("model_index.json"))
        #expect(index.className == "StableDiffusionPipeline" && index.components["unet"] == "UNet2DConditionModel")
        let dir = try copyOfFixtureModel()
        defer { try? FileManager.default.removeItem(at: dir) }
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("model_index.json"))) as! [String: Any]
        json["unet"] = ["diffusers", "UNet2DModel"]
        try JSONSerialization.data(withJSONObject: json).write(to: dir.appendingPathComponent("model_index.json"))
        #expect(throws: ModelError.unsupportedConfig(file: dir.appendingPathComponent("model_index.json").path, field: "unet",
                                                     value: "UNet2DModel", supported: "UNet2DConditionModel")) {
            _ = try StableDiffusionModels.loadFolder(dir)
        }
    }

    @Test func shardedCheckpointsLoadTheSameWeights() throws {
        let dir = try copyOfFixtureModel()
        defer { try? FileManager.default.removeItem(at: dir) }
        let unetDir = dir.appendingPathComponent("unet")
        let single = unetDir.appendingPathComponent("diffusion_pytorch_model.safetensors")
        let file = try SafetensorsFile(path: single.path)
        var shards = [SafetensorsWriter(), SafetensorsWriter()]
        var map: [String: String] = [:]
        for (i, name) in file.names.enumerated() {
            shards[i % 2].add(name, try file.tensor(name).copy())
            map[name] = "diffusion_pytorch_model-0000\(i % 2 + 1)-of-00002.safetensors"
        }
        for (i, shard) in shards.enumerated() {
            try shard.write(to: unetDir.appendingPathComponent("diffusion_pytorch_model-0000\(i + 1)-of-00002.safetensors").path)
        }
        try JSONSerialization.data(withJSONObject: ["metadata": [:], "weight_map": map])
            .write(to: unetDir.appendingPathComponent("diffusion_pytorch_model.safetensors.index.json"))
        try FileManager.default.removeItem(at: single)
        let sharded = try UNet2DConditionModel.load(directory: unetDir)
        let reference = try UNet2DConditionModel.load(directory: Fixtures.model.appendingPathComponent("unet"))
        for (key, t) in reference.weights.tensors { #expect(sharded.weights[key].array == t.array, "\(key)") }

        // An index naming a shard outside the folder is refused.
        map[map.keys.first!] = "../elsewhere.safetensors"
        try JSONSerialization.data(withJSONObject: ["weight_map": map])
            .write(to: unetDir.appendingPathComponent("diffusion_pytorch_model.safetensors.index.json"))
        #expect(throws: ModelError.self) { _ = try UNet2DConditionModel.load(directory: unetDir) }
    }

    @Test func legacyVAEAttentionNamesLoad() throws {
        let dir = try copyOfFixtureModel()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("vae/diffusion_pytorch_model.safetensors").path
        let file = try SafetensorsFile(path: path)
        var writer = SafetensorsWriter()
        let legacy = ["to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"]
        for name in file.names {
            var renamed = name
            for (new, old) in legacy where name.contains(".attentions.0.\(new).") {
                renamed = name.replacingOccurrences(of: ".attentions.0.\(new).", with: ".attentions.0.\(old).")
            }
            writer.add(renamed, try file.tensor(name).copy())
        }
        try writer.write(to: path)
        let vae = try AutoencoderKL.load(directory: dir.appendingPathComponent("vae"))
        let reference = try AutoencoderKL.load(directory: Fixtures.model.appendingPathComponent("vae"))
        for (key, t) in reference.weights.tensors { #expect(vae.weights[key].array == t.array, "\(key)") }
    }
}
