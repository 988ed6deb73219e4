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
        let url = Fixtures.directory.deletingLastPathComponent().appendingPathComponent("keymaps/\(file)")
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
