import CDTestSupport
import CDModels
import CDTensor
import CDTraining
import Foundation
import Testing

/// Checkpoint/resume: 6 steps straight equal 3 steps + save + load into a fresh trainer + 3 steps,
/// bit for bit; bad state files fail clearly and change nothing.
@Suite(.serialized) struct TrainingStateTests {
    /// A small job over a stream of cached-latent samples (two instance images, two class images),
    /// with gradient accumulation and a warm-up schedule so every piece of state matters.
    struct Job {
        let pipeline: StableDiffusionPipeline
        let settings: TrainingSettings
        let examples: [(mean: Tensor, std: Tensor, mask: Tensor)]

        init() throws {
            pipeline = try StableDiffusionPipeline.load(Fixtures.model.path)
            var s = TrainingSettings()
            s.learningRate = 1e-3
            s.embeddingLearningRate = 5e-3
            s.gradientAccumulation = 2
            s.schedule = .constantWithWarmup(warmup: 2)
            settings = s
            let c = pipeline.models.unet.config, side = c.sampleSize ?? 8
            var rng = SplitMix64(seed: 11)
            examples = (0..<4).map { _ in
                (rng.normalTensor([c.inChannels, side, side]), rng.uniformTensor([c.inChannels, side, side], 0.1, 0.5),
                 Tensor(Array(repeating: 1, count: side * side), shape: [1, side, side]))
            }
        }

        func trainer() throws -> CustomDiffusionTrainer {
            try CustomDiffusionTrainer(models: pipeline.models, tokenizer: pipeline.tokenizer, tokens: [("<new1>", "ktn")], settings: settings)
        }

        /// Step k: two micro-batches of [instance, class], samples numbered by global index.
        func batches(_ trainer: CustomDiffusionTrainer, step k: Int) -> [TrainingBatch] {
            let ids = [trainer.tokenizer.encodePadded("photo of a <new1> dog"), trainer.tokenizer.encodePadded("photo of a dog")]
            return (0..<2).map { micro in
                let index = 2 * k + micro
                let inst = examples[index % 2], cls = examples[2 + index % 2]
                return TrainingBatch.draw([(inst.mean, inst.std, inst.mask, ids[0], index), (cls.mean, cls.std, cls.mask, ids[1], index)],
                                          instanceCount: 1, scalingFactor: pipeline.models.vae.config.scalingFactor,
                                          trainTimesteps: trainer.noiseSchedule.trainTimesteps, seed: 42)
            }
        }
    }

    private func snapshot(_ t: CustomDiffusionTrainer) -> [Float] {
        t.tokens.rows.array + t.trainableKeys.flatMap { t.parameter($0)!.array }
    }

    @Test func resumeGivesIdenticalWeights() throws {
        let job = try Job()
        let straight = try job.trainer()
        var losses: [Double] = []
        try straight.train(until: 6, batches: { job.batches(straight, step: $0) }) { losses.append($0.losses.loss) }
        #expect(straight.step == 6 && straight.samplesSeen == 12)
        #expect(losses.allSatisfy { $0.isFinite })

        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cd-state-\(UUID()).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let first = try job.trainer()
        try first.train(until: 3, batches: { job.batches(first, step: $0) }) { _ in }
        try first.saveState(to: path)
        let resumed = try job.trainer()
        try resumed.loadState(from: path)
        #expect(resumed.step == 3 && resumed.samplesSeen == 6)
        try resumed.train(until: 6, batches: { job.batches(resumed, step: $0) }) { _ in }
        let a = snapshot(straight), b = snapshot(resumed)
        #expect(a == b, "resumed weights differ from straight training at \(zip(a, b).filter { $0 != $1 }.count) of \(a.count) elements")
        #expect(snapshot(first) != a, "the comparison must cover steps 4–6")
    }

    @Test func badStateFilesFailClearlyAndChangeNothing() throws {
        let job = try Job()
        let trainer = try job.trainer()
        try trainer.train(until: 1, batches: { job.batches(trainer, step: $0) }) { _ in }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cd-state-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let good = dir.appendingPathComponent("state.safetensors").path
        try trainer.saveState(to: good)
        let before = snapshot(trainer), goodBytes = try Data(contentsOf: URL(fileURLWithPath: good))

        func expectRejected(_ path: String, mentioning text: String) {
            do {
                try trainer.loadState(from: path)
                Issue.record("\(path) was accepted")
            } catch let error as TrainingError {
                #expect("\(error)".contains(path) && "\(error)".contains(text), "unexpected message: \(error)")
            } catch {
                Issue.record("unexpected error type: \(error)")
            }
            #expect(snapshot(trainer) == before && trainer.step == 1, "a rejected state changed the trainer")
        }
        let truncated = dir.appendingPathComponent("truncated.safetensors").path
        try goodBytes.prefix(goodBytes.count / 2).write(to: URL(fileURLWithPath: truncated))
        expectRejected(truncated, mentioning: "not a readable safetensors file")
        expectRejected(Fixtures.caseFile("cd_train.safetensors").path, mentioning: "not a cdtrainer training state")

        var other = job.settings
        other.trainable = .crossattn
        let otherJob = try CustomDiffusionTrainer(models: job.pipeline.models, tokenizer: job.pipeline.tokenizer,
                                                  tokens: [("<new1>", "ktn")], settings: other)
        let foreign = dir.appendingPathComponent("other.safetensors").path
        try otherJob.saveState(to: foreign)
        expectRejected(foreign, mentioning: "different job")

        // A save that cannot complete leaves the earlier checkpoint as it was.
        #expect(throws: (any Error).self) { try trainer.saveState(to: dir.appendingPathComponent("missing/state.safetensors").path) }
        let after = try Data(contentsOf: URL(fileURLWithPath: good))
        #expect(after == goodBytes)
        try trainer.loadState(from: good)
        #expect(snapshot(trainer) == before)
    }
}
