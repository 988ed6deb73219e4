import CDTestSupport
import CDTensor
import Foundation
import Testing
@testable import CDModels

@Suite struct UNetTests {
    @Test func forwardMatchesDiffusersWithIntermediates() throws {
        let unet = try UNet2DConditionModel.load(directory: Fixtures.model.appendingPathComponent("unet"))
        let ref = try SafetensorsFile(path: Fixtures.caseFile("unet_forward.safetensors").path)
        let timesteps = try ref.integers("timesteps").map(Float.init)
        var seen: [String: Tensor] = [:]
        let out = unet.forward(sample: try ref.tensor("sample"), timesteps: timesteps,
                               context: try ref.tensor("encoder_hidden_states")) { seen[$0] = $1.copy() }
        for name in ref.names where seen[name] != nil {
            expectParity(seen[name]!, try ref.tensor(name), name)
        }
        let levels = unet.config.levels
        let expectedNames = ["time_proj", "time_embedding", "conv_in", "mid_block"]
            + (0..<levels).map { "down_blocks.\($0)" } + (0..<levels).map { "up_blocks.\($0)" }
        for name in expectedNames { #expect(seen[name] != nil && ref.contains(name), "intermediate \(name) not compared") }
        expectParity(out, try ref.tensor("out"), "out")
    }

    @Test func parameterTableCoversTheCheckpointExactly() throws {
        let dir = Fixtures.model.appendingPathComponent("unet")
        let config = try readConfig(UNet2DConditionConfig.self, from: dir.appendingPathComponent("config.json"))
        let file = try SafetensorsFile(path: dir.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
        let specs = UNet2DConditionModel.parameterSpecs(config)
        #expect(Set(specs.map(\.key)) == Set(file.names))
        #expect(specs.count == Set(specs.map(\.key)).count, "duplicate keys in the table")
        for s in specs { #expect(try file.entry(s.key).shape == s.shape, "\(s.key)") }
    }

    @Test func ownedCopiesCanBeTrainedWithoutTouchingTheFile() throws {
        let unet = try UNet2DConditionModel.load(directory: Fixtures.model.appendingPathComponent("unet"))
        let kv = unet.weights.tensors.keys.filter { $0.hasSuffix("attn2.to_k.weight") || $0.hasSuffix("attn2.to_v.weight") }.sorted()
        #expect(!kv.isEmpty)
        let trainable = unet.weights.withOwnedCopies(of: kv)
        let before = unet.weights[kv[0]].pointer[0]
        trainable[kv[0]].pointer[0] += 1  // would fault on the read-only mapping
        #expect(trainable[kv[0]].pointer[0] == before + 1 && unet.weights[kv[0]].pointer[0] == before)
        let edited = try UNet2DConditionModel(config: unet.config, weights: trainable)
        #expect(edited.weights[kv[0]].pointer[0] == before + 1)
    }

    @Test func unsupportedConfigsAreRejectedByField() throws {
        var c = UNet2DConditionConfig.sd15
        c.downBlockTypes[0] = "SimpleCrossAttnDownBlock2D"
        #expect(throws: ModelError.unsupportedConfig(file: "x", field: "down_block_types", value: "SimpleCrossAttnDownBlock2D",
                                                     supported: "CrossAttnDownBlock2D, DownBlock2D")) { try c.validate(file: "x") }
        c = .sd15; c.additionEmbedType = "text_time"
        #expect(throws: ModelError.self) { try c.validate(file: "x") }
        c = .sd15; c.attentionHeadDim = .each([8, 8])
        #expect(throws: ModelError.self) { try c.validate(file: "x") }
        try UNet2DConditionConfig.sd15.validate(file: "x")
    }
}
