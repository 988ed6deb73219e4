import CDTestSupport
import CDTensor
import Foundation
import Testing
@testable import CDModels

@Suite struct PipelineTests {
    @Test func promptEmbeddingsMatchTheDiffusersPipeline() throws {
        let pipeline = try StableDiffusionPipeline.load(Fixtures.model.path)
        let info = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.caseFile("ddim_sample.json"))) as! [String: Any]
        let ref = try SafetensorsFile(path: Fixtures.caseFile("ddim_sample.safetensors").path)
        let embeddings = pipeline.encode([info["negative_prompt"] as! String, info["prompt"] as! String])
        expectParity(embeddings, try ref.tensor("prompt_embeds"), "prompt_embeds [negative; positive]")
    }

    @Test func generatesImagesInRangeAndRejectsBadRequests() throws {
        let pipeline = try StableDiffusionPipeline.load(Fixtures.model.path)
        var request = StableDiffusionPipeline.Request(prompt: "a fox")
        let unit = pipeline.vaeScaleFactor << (pipeline.models.unet.config.levels - 1)
        request.steps = 2
        request.width = unit; request.height = 2 * unit; request.count = 2
        request.sampler = .dpmSolverPP2M
        #expect(pipeline.validate(request) == nil)
        let images = pipeline.generate(request)
        #expect(images.shape == [2, 3, 2 * unit, unit])
        #expect(images.array.allSatisfy { $0 >= 0 && $0 <= 1 })
        #expect(images[0].array != images[1].array, "two samples of one request should differ")
        request.width = unit + 4
        #expect(pipeline.validate(request)?.contains("multiples of") == true)
        request.width = unit; request.steps = 0
        #expect(pipeline.validate(request)?.contains("steps") == true)
        request.steps = pipeline.models.scheduler.numTrainTimesteps + 1
        #expect(pipeline.validate(request)?.contains("steps") == true)
        request.steps = 2; request.guidance = .infinity
        #expect(pipeline.validate(request)?.contains("guidance") == true)
        request.guidance = 7.5; request.prompt = "a <new1> dog"
        _ = try pipeline.tokenizer.addToken("<new1>")
        #expect(pipeline.validate(request)?.contains("<new1>") == true)
        pipeline.tokenEmbeddings = EmbeddingOverride(rowIds: [pipeline.tokenizer.id(of: "<new1>")!],
                                                     rows: Tensor(zeros: [1, pipeline.models.textEncoder.config.hiddenSize]))
        #expect(pipeline.validate(request) == nil)
    }

    @Test func pngRoundTripAndFixtureImage() throws {
        let image = try PNGImage.read(Fixtures.caseFile("vae_input.png").path)
        let ref = try SafetensorsFile(path: Fixtures.caseFile("vae_encode.safetensors").path).tensor("image")
        let asModelInput = Tensor(zeros: image.shape)
        for i in 0..<image.count { asModelInput.pointer[i] = image.pointer[i] * 2 - 1 }
        expectParity(asModelInput, ref, "vae_input.png as [-1, 1]", tolerance: 1e-6)

        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cd-\(UUID().uuidString).png").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try PNGImage.write(image, to: path)
        #expect(try PNGImage.read(path).array == image.array)
        let notPNG = path + ".txt"
        try Data("not an image".utf8).write(to: URL(fileURLWithPath: notPNG))
        defer { try? FileManager.default.removeItem(atPath: notPNG) }
        #expect { _ = try PNGImage.read(notPNG) } throws: { error in
            guard case let PNGImage.Failure.read(file, _) = error else { return false }
            return file == notPNG
        }
    }
}
