import CDTestSupport
import CDImages
import CDModels
import CDProtocol
import CDTensor
@testable import CDTraining
import Foundation
import Testing

/// `cdtrainerd run`'s engine on the bundled demo job, made small: files, resume, equality with the
/// engine's own step, class-image reuse, multi-concept data. The model and resolution come from
/// the fixture (`$CD_FIXTURES`), the images from configs/jobs/demo-images.
@Suite(.serialized) struct JobRunnerTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let demoImages = root.appendingPathComponent("configs/jobs/demo-images/toy").path

    /// The demo job on the fixture model at its native resolution, `steps` long.
    func demoSpec(steps: Int, checkpointEvery: Int) throws -> JobSpec {
        var spec = try JobSpec.load(path: Self.root.appendingPathComponent("configs/jobs/demo.toml").path)
        let pipeline = try StableDiffusionPipeline.load(Fixtures.model.path)
        let res = pipeline.vaeScaleFactor * (pipeline.models.unet.config.sampleSize ?? 8)
        spec.model = Fixtures.model.path
        spec.resolution = res
        spec.steps = steps
        spec.checkpointEvery = checkpointEvery
        spec.concepts[0].numClassImages = 2
        spec.validation?.every = checkpointEvery
        spec.validation?.steps = 3
        spec.validation?.count = 1
        spec.validation?.width = res
        spec.validation?.height = res
        return spec
    }

    func temporaryFolder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("cd-run-\(UUID())")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    @Test func demoJobWritesEveryFileAndItsOutputsChangeSampling() throws {
        let out = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: out) }
        let spec = try demoSpec(steps: 4, checkpointEvery: 2)
        var lines: [String] = []
        let summary = try JobRunner(spec: spec, outputDirectory: out) { lines.append($0) }.run()
        #expect(summary.steps == 4)
        let fm = FileManager.default
        var expected = ["job.toml", "train_log.jsonl", "loss.svg", "samples/step-000002.png", "samples/step-000004.png",
                        "class_images/concept-0"]
        for step in ["step-000002", "step-000004"] {
            expected += ["checkpoints/\(step)/state.safetensors", "checkpoints/\(step)/diffusers/pytorch_custom_diffusion_weights.safetensors",
                         "checkpoints/\(step)/diffusers/<toy1>.safetensors", "checkpoints/\(step)/a1111/\(spec.name).delta.safetensors",
                         "checkpoints/\(step)/\(spec.name).concept.safetensors"]
        }
        expected += ["diffusers/pytorch_custom_diffusion_weights.safetensors", "diffusers/<toy1>.safetensors",
                     "a1111/\(spec.name).delta.safetensors", "a1111/<toy1>.safetensors", "\(spec.name).concept.safetensors"]
        for path in expected { #expect(fm.fileExists(atPath: out.appendingPathComponent(path).path), "missing \(path)") }
        let log = try String(contentsOf: out.appendingPathComponent("train_log.jsonl"), encoding: .utf8).split(separator: "\n")
        #expect(log.count == 4)
        let last = try JSONSerialization.jsonObject(with: Data(log[3].utf8)) as? [String: Any]
        #expect(last?["step"] as? Int == 4 && (last?["loss"] as? Double)?.isFinite == true && last?["samples_seen"] as? Int == 4 * spec.batchSize)
        #expect(try String(contentsOf: out.appendingPathComponent("loss.svg"), encoding: .utf8).contains("<polyline"))
        #expect(lines.contains { $0.hasPrefix("step 4/4") && $0.contains("ETA") })
        #expect(ClassImages.files(in: out.appendingPathComponent("class_images/concept-0").path).count == 2)
        let grid = try PNGImage.read(out.appendingPathComponent("samples/step-000004.png").path)
        #expect(grid.shape == [1, 3, spec.resolution * (spec.validation?.prompts.count ?? 0), spec.resolution])

        // The diffusers outputs load back and change sampling.
        func sample(_ p: StableDiffusionPipeline) -> Tensor {
            var r = StableDiffusionPipeline.Request(prompt: "photo of a toy")
            r.steps = 3
            r.width = spec.resolution
            r.height = spec.resolution
            return p.generate(r)
        }
        let base = try StableDiffusionPipeline.load(Fixtures.model.path)
        let trained = try StableDiffusionPipeline.load(Fixtures.model.path)
        try trained.apply(try ConceptFile.load(out.appendingPathComponent("diffusers").path))
        #expect(trained.tokenizer.id(of: "<toy1>") != nil)
        let (a, b) = (sample(base), sample(trained))
        #expect(a.array != b.array, "the trained K/V must change the images")
    }

    /// `compute_precision = "bf16"` through the whole job (data path, validation sampling,
    /// checkpoints): the run selects bf16 process-wide, its losses follow the fp32 run's, and the
    /// next job's default (fp32) selects fp32 again.
    @Test(.enabled(if: ComputePrecision.bf16Supported, "bf16 compute needs a CPU with AVX512_BF16"))
    func bf16JobFollowsTheFP32Job() throws {
        defer { try? ComputePrecision.select(.fp32) }
        func losses(_ precision: ComputePrecisionName?) throws -> [Double] {
            let out = try temporaryFolder()
            defer { try? FileManager.default.removeItem(at: out) }
            var spec = try demoSpec(steps: 6, checkpointEvery: 6)
            spec.computePrecision = precision
            try JobRunner(spec: spec, outputDirectory: out) { _ in }.run()
            #expect(ComputePrecision.current == (precision == .bf16 ? .bf16 : .fp32))
            let written = try String(contentsOf: out.appendingPathComponent("job.toml"), encoding: .utf8)
            #expect(written.contains("compute_precision = \"bf16\"") == (precision == .bf16))
            let log = try String(contentsOf: out.appendingPathComponent("train_log.jsonl"), encoding: .utf8).split(separator: "\n")
            return try log.map { line in
                let entry = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                return try #require(entry?["loss"] as? Double)
            }
        }
        let bf16 = try losses(.bf16), fp32 = try losses(nil)
        #expect(bf16.count == 6 && fp32.count == 6)
        for (step, (a, b)) in zip(bf16, fp32).enumerated() {
            #expect(abs(a - b) <= 0.02 * abs(b), "step \(step + 1): bf16 loss \(a), fp32 \(b)")
        }
        #expect(bf16 != fp32, "bf16 gave fp32's losses bit for bit: its kernels did not run")
    }

    @Test func resumeContinuesTheSameRun() throws {
        let straightOut = try temporaryFolder(), resumedOut = try temporaryFolder()
        defer { for u in [straightOut, resumedOut] { try? FileManager.default.removeItem(at: u) } }
        var spec = try demoSpec(steps: 4, checkpointEvery: 2)
        spec.validation = nil
        try JobRunner(spec: spec, outputDirectory: straightOut) { _ in }.run()
        var first = spec
        first.steps = 2  // "interrupted" after the checkpoint at step 2
        try JobRunner(spec: first, outputDirectory: resumedOut) { _ in }.run()
        var lines: [String] = []
        try JobRunner(spec: spec, outputDirectory: resumedOut) { lines.append($0) }.run(resume: true)
        #expect(lines.contains { $0.contains("resumed from step-000002") })
        let a = try SafetensorsFile(path: straightOut.appendingPathComponent("checkpoints/step-000004/state.safetensors").path)
        let b = try SafetensorsFile(path: resumedOut.appendingPathComponent("checkpoints/step-000004/state.safetensors").path)
        #expect(a.names == b.names)
        for name in a.names { #expect(try a.tensor(name).array == b.tensor(name).array, "\(name) differs after resume") }
        let log = try String(contentsOf: resumedOut.appendingPathComponent("train_log.jsonl"), encoding: .utf8).split(separator: "\n")
        #expect(log.count == 4, "the log holds each step once")
    }

    /// With augmentation off, one step of the job equals the engine's step on latents computed
    /// here from the same image: the data path adds nothing.
    @Test func unaugmentedStepEqualsTheEngineStep() throws {
        let work = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: work) }
        let fm = FileManager.default
        for (folder, file) in [("inst", "toy-0.png"), ("cls", "toy-1.png")] {
            try fm.createDirectory(at: work.appendingPathComponent(folder), withIntermediateDirectories: true)
            try fm.copyItem(atPath: "\(Self.demoImages)/\(file)", toPath: work.appendingPathComponent("\(folder)/\(file)").path)
        }
        var spec = try demoSpec(steps: 1, checkpointEvery: 1)
        spec.augment = false
        spec.hflip = false
        spec.batchSize = 1
        spec.latentCacheViews = 1
        spec.validation = nil
        spec.concepts[0].instanceImages = [work.appendingPathComponent("inst/toy-0.png").path]
        spec.concepts[0].classImages = work.appendingPathComponent("cls").path
        spec.concepts[0].numClassImages = 1
        let out = work.appendingPathComponent("out")
        try JobRunner(spec: spec, outputDirectory: out) { _ in }.run()

        let pipeline = try StableDiffusionPipeline.load(Fixtures.model.path)
        let runner = JobRunner(spec: spec, outputDirectory: work.appendingPathComponent("unused")) { _ in }
        let trainer = try runner.makeTrainer(pipeline)
        let s = spec.resolution, m = s / pipeline.vaeScaleFactor
        func posterior(_ file: String) throws -> (Tensor, Tensor) {
            let img = try ImageDecoder.decode(path: file).resized(width: s, height: s, filter: .bilinear)
            let x = Tensor(zeros: [1, 3, s, s])
            for c in 0..<3 { for i in 0..<(s * s) { x.pointer[c * s * s + i] = Float(img.pixels[i * 3 + c]) / 127.5 - 1 } }
            let p = pipeline.models.vae.encode(x)
            return (p.mean[0].copy(), p.std[0].copy())
        }
        let (im, isd) = try posterior(spec.concepts[0].instanceImages[0])
        let (cm, csd) = try posterior(work.appendingPathComponent("cls/toy-1.png").path)
        // diffusers' un-augmented instance mask drops the outer ring of latent pixels.
        let ring = Tensor(zeros: [1, m, m]), ones = Tensor(zeros: [1, m, m])
        ones.fill(1)
        for r in 1..<(m - 1) { for c in 1..<(m - 1) { ring.pointer[r * m + c] = 1 } }
        let batch = TrainingBatch.draw([(im, isd, ring, trainer.tokenizer.encodePadded(spec.concepts[0].instancePrompt), 0),
                                        (cm, csd, ones, trainer.tokenizer.encodePadded(spec.concepts[0].classPrompt ?? ""), 1 << 40)],
                                       instanceCount: 1, scalingFactor: pipeline.models.vae.config.scalingFactor,
                                       trainTimesteps: trainer.noiseSchedule.trainTimesteps, seed: spec.seed)
        _ = try trainer.step([batch])
        let state = try SafetensorsFile(path: out.appendingPathComponent("checkpoints/step-000001/state.safetensors").path)
        #expect(try state.tensor("param.token_embedding").array == trainer.tokens.rows.array)
        for key in trainer.trainableKeys {
            #expect(try state.tensor("param." + key).array == trainer.parameter(key)!.array, "\(key)")
        }
    }

    @Test func generatedClassImagesAreReused() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let pipeline = try StableDiffusionPipeline.load(Fixtures.model.path)
        let res = pipeline.vaeScaleFactor * (pipeline.models.unet.config.sampleSize ?? 8)
        var made = 0
        let first = try ClassImages.ensure(count: 2, in: folder.path, prompt: "toy", pipeline: pipeline, resolution: res, seed: 5, steps: 2) { _ in made += 1 }
        #expect(first.count == 2 && made == 2 && first.allSatisfy { $0.contains("seed-") })
        let stamps = try first.map { try FileManager.default.attributesOfItem(atPath: $0)[.modificationDate] as? Date }
        let again = try ClassImages.ensure(count: 2, in: folder.path, prompt: "toy", pipeline: pipeline, resolution: res, seed: 5, steps: 2) { _ in made += 1 }
        #expect(again == first && made == 2, "a rerun generates nothing")
        #expect(try first.map { try FileManager.default.attributesOfItem(atPath: $0)[.modificationDate] as? Date } == stamps)
        let more = try ClassImages.ensure(count: 3, in: folder.path, prompt: "toy", pipeline: pipeline, resolution: res, seed: 5, steps: 2) { _ in made += 1 }
        #expect(more.count == 3 && made == 3 && Set(first).isSubset(of: Set(more)))
        try "a toy on a shelf\n".write(toFile: (more[0] as NSString).deletingPathExtension + ".txt", atomically: true, encoding: .utf8)
        #expect(ClassImages.caption(for: more[0], default: "toy") == "a toy on a shelf" && ClassImages.caption(for: more[1], default: "toy") == "toy")
    }

    /// Two concepts with their own tokens: every instance image keeps its concept's prompt, class
    /// images come in concept order, and each batch pairs instance and class samples like diffusers.
    @Test func multiConceptBatches() throws {
        var spec = try demoSpec(steps: 1, checkpointEvery: 1)
        let images = ClassImages.files(in: Self.demoImages)
        spec.concepts[0].instanceImages = Array(images.prefix(2))
        var second = spec.concepts[0]
        second.instancePrompt = "photo of a <pot1> pot"
        second.modifierToken = "<pot1>"
        second.initializerToken = "pll"
        second.classPrompt = "pot"
        second.instanceImages = Array(images.suffix(2))
        spec.concepts.append(second)
        let out = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: out) }
        let pipeline = try StableDiffusionPipeline.load(Fixtures.model.path)
        let runner = JobRunner(spec: spec, outputDirectory: out) { _ in }
        let trainer = try runner.makeTrainer(pipeline)
        #expect(trainer.tokens.names == ["<toy1>", "<pot1>"])
        let samples = try runner.makeSamples(pipeline, trainer: trainer, instances: try runner.loadInstances(),
                                              classes: try runner.distributeClassImages(pipeline))
        let d = samples.dataset
        #expect(d.instances.count == 4 && d.classes.count == 4 && d.length == 4)
        for item in d.instances {
            #expect(item.prompt == (images.prefix(2).contains(item.source) ? "photo of a <toy1> toy" : "photo of a <pot1> pot"))
        }
        #expect(d.classes.map(\.prompt) == ["toy", "toy", "pot", "pot"])
        let batch = samples.batch([0, 1, 2, 3], withPrior: true)
        #expect(batch.count == 8 && batch.instanceCount == 4)
        for i in 0..<4 {
            let item = d.itemIndex(i)
            let ids = batch.ids[i], token = trainer.tokens.ids[d.instances[item % 4].prompt.contains("<toy1>") ? 0 : 1]
            #expect(ids.contains(token), "instance sample \(i) carries its concept's token")
            #expect(batch.ids[4 + i] == trainer.tokenizer.encodePadded(d.classes[item % 4].prompt), "class sample \(i)")
        }
        #expect(Set(batch.timesteps).count > 1)
    }
}
