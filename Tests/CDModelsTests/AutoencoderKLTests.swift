import CDTestSupport
import CDTensor
import Foundation
import Testing
@testable import CDModels

@Suite struct AutoencoderKLTests {
    let vae: AutoencoderKL

    init() throws { vae = try AutoencoderKL.load(directory: Fixtures.model.appendingPathComponent("vae")) }

    @Test func encodeMatchesDiffusers() throws {
        let ref = try SafetensorsFile(path: Fixtures.caseFile("vae_encode.safetensors").path)
        var seen: [String: Tensor] = [:]
        let dist = vae.encode(try ref.tensor("image")) { seen[$0] = $1.copy() }
        expectParity(try #require(seen["encoder_out"]), try ref.tensor("encoder_out"), "encoder_out")
        expectParity(try #require(seen["moments"]), try ref.tensor("moments"), "moments")
        expectParity(dist.mean, try ref.tensor("latent_mean"), "latent_mean")
        expectParity(dist.logVariance, try ref.tensor("latent_logvar"), "latent_logvar")
        expectParity(dist.std, try ref.tensor("latent_std"), "latent_std")
    }

    @Test func decodeMatchesDiffusers() throws {
        let ref = try SafetensorsFile(path: Fixtures.caseFile("vae_decode.safetensors").path)
        expectParity(vae.decode(try ref.tensor("z")), try ref.tensor("out"), "decode(z)")
        expectParity(vae.decode(try ref.tensor("z_mean")), try ref.tensor("out_of_mean"), "decode(z_mean)")
    }

    @Test func parameterTableCoversTheCheckpointExactly() throws {
        let dir = Fixtures.model.appendingPathComponent("vae")
        let file = try SafetensorsFile(path: dir.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
        let specs = AutoencoderKL.parameterSpecs(vae.config)
        #expect(Set(specs.map(\.key)) == Set(file.names))
        #expect(specs.count == Set(specs.map(\.key)).count, "duplicate keys in the table")
    }
}
