import CDDistributed
import CDImages
import CDModels
import CDProtocol
import CDTensor
import Foundation

/// One job from its spec to its outputs, in this process (`cdtrainerd run`): base model, class
/// images (generated when missing), instance images, latent cache, training with checkpoints,
/// validation grids, log, loss plot and final outputs in every requested format.
///
/// Output folder:
///   job.toml                         the spec as run
///   train_log.jsonl                  one JSON object per optimizer step
///   loss.svg                         the loss curve (rewritten at every checkpoint and at the end)
///   samples/step-NNNNNN.png          validation grids (rows: prompts, columns: images)
///   checkpoints/step-NNNNNN/         state.safetensors + the outputs at that step
///   diffusers/, a1111/, NAME.concept.safetensors   the final outputs
/// A checkpoint folder is written under a temporary name and renamed when complete, so an
/// interrupted run never leaves a half-written checkpoint that `--resume` would pick up.
public final class JobRunner: @unchecked Sendable {
    public let spec: JobSpec
    public let out: URL
    /// The world this job runs on: the global batch of each step is split over its ranks.
    public let world: Communicator
    /// Progress lines; rank 0's only (the other ranks report nothing but thrown errors).
    let log: (String) -> Void
    /// Rank 0's say at each step boundary (after the step's log, checkpoint and samples): go on,
    /// stop with a checkpoint (a signal), or cancel. Every rank acts on rank 0's answer.
    public var decide: () -> StepDecision = { .proceed }
    /// Rank 0's progress, checkpoints and samples as they happen (the daemon records them).
    public var observe: (Event) -> Void = { _ in }

    /// Under data parallelism (`communicator` of several ranks) every rank builds the same runner
    /// with the same spec; the output folders may differ (each node its own). Rank 0 writes every
    /// file (log, checkpoints, samples, outputs) and prints progress, and sends the class images
    /// it generates to the others; the others train their share of each global batch.
    /// Per-sample randomness comes from (seed, global sample index), so the sample stream, and the
    /// result up to floating-point summation order, do not depend on the world size.
    public init(spec: JobSpec, outputDirectory: URL, communicator: Communicator = SingleProcessCommunicator(),
                log: @escaping (String) -> Void) {
        self.spec = spec
        self.out = outputDirectory
        self.world = communicator
        self.log = communicator.rank == 0 ? log : { _ in }
    }

    /// What every rank does after a step, as rank 0 decided.
    public enum StepDecision: UInt8, Sendable {
        case proceed = 0
        /// Write a checkpoint at this step (if it has none yet) and end: the job is resumed later.
        case stop = 1
        /// End without outputs.
        case cancel = 2
        /// Rank 0 failed (it throws its error; the others a `TrainingError.rankFailed`).
        case fail = 3
    }

    public enum Event {
        case progress(CustomDiffusionTrainer.StepReport, allreduceSeconds: Double)
        case checkpoint(step: Int, folder: URL)
        case samples(step: Int, file: URL)
    }

    /// How a run ended.
    public enum Outcome: Sendable, Equatable {
        case completed
        /// Stopped by `decide` at `step`, with a checkpoint there.
        case stopped(step: Int)
        case cancelled(step: Int)
    }

    /// What `run` did.
    public struct Summary: Sendable {
        public var steps: Int
        public var finalLoss: Double?
        /// Files written (rank 0; empty on the other ranks).
        public var outputs: [String]
        /// VAE encodes of this rank.
        public var vaeEncodes: Int
        public var outcome: Outcome
    }

    /// Runs the job; with `resume`, continues from the newest complete checkpoint in the output folder.
    /// A failure on one rank during setup or on rank 0 while writing fails the job on every rank
    /// (no rank is left waiting in a collective).
    @discardableResult
    public func run(resume: Bool = false) throws -> Summary {
        let fm = FileManager.default
        let lead = world.isLead
        log("loading \(spec.model)" + (world.size > 1 ? " (\(world.size) ranks)" : ""))
        let (pipeline, trainer, instances) = try agreeing { () -> (StableDiffusionPipeline, CustomDiffusionTrainer, [ConceptDataset.Item]) in
            if lead {
                try fm.createDirectory(at: out, withIntermediateDirectories: true)
                try spec.toTOML().write(to: out.appendingPathComponent("job.toml"), atomically: true, encoding: .utf8)
            }
            try selectPrecision()  // here, so that a rank without bf16 fails the job on every rank
            let pipeline = try StableDiffusionPipeline.load(spec.model)
            return (pipeline, try makeTrainer(pipeline), try loadInstances())
        }
        let classes = try distributeClassImages(pipeline)
        let samples = try agreeing { try makeSamples(pipeline, trainer: trainer, instances: instances, classes: classes) }

        var history = try agreeing { () -> [(Int, Double)] in
            if lead && !resume { try? fm.removeItem(at: out.appendingPathComponent("train_log.jsonl")) }
            return lead && resume ? try resumeHistory(trainer) : []
        }
        // Every rank starts from rank 0's parameters (and, after a resume, its moments and position).
        try trainer.broadcastState(root: 0, over: world)
        let logFile = try agreeing { lead ? try openLog() : nil }
        defer { try? logFile?.close() }
        let parallel = DataParallelStep(trainer: trainer, communicator: world)
        let b = spec.batchSize, micro = spec.batchSize / spec.gradientAccumulation
        let share = BatchShare.range(rank: world.rank, size: world.size, total: b)
        let started = Date(), firstStep = trainer.step
        var outcome = Outcome.completed
        while trainer.step < spec.steps {
            // Global samples k·B ..< (k+1)·B; this rank's contiguous share, in micro-batches of at most B / accumulation.
            let k = trainer.step
            let indices = share.map { k * b + $0 }
            let batches = stride(from: 0, to: indices.count, by: micro).map {
                samples.batch(Array(indices[$0..<min($0 + micro, indices.count)]), withPrior: spec.withPriorPreservation)
            }
            let result = try parallel.step(batches, globalBatch: b)
            let report = result.step
            let last = report.step == spec.steps, checkpointing = report.step % spec.checkpointEvery == 0 || last
            if checkpointing, try parallel.verifyIdentical() > 0 {
                log("warning: some ranks' weights differed from rank 0's at step \(report.step); copied rank 0's to all")
            }
            var decision = StepDecision.proceed
            var failure: (any Error)?
            if lead, let logFile {
                do {
                    history.append((report.step, report.losses.loss))
                    let done = report.step - firstStep, elapsed = Date().timeIntervalSince(started)
                    let eta = elapsed / Double(done) * Double(spec.steps - report.step)
                    let comm = world.size > 1 ? String(format: "  allreduce %.1f ms", result.allreduceSeconds * 1000) : ""
                    log(String(format: "step %d/%d  loss %.5f  lr %.2e  |g| %.3g  %.2f s/step%@  ETA %@", report.step, spec.steps,
                               report.losses.loss, report.update.learningRate, report.update.gradientNorm, report.seconds, comm, Self.duration(eta)))
                    try logFile.write(contentsOf: Data((Self.logLine(report, samplesSeen: trainer.samplesSeen,
                                                                     allreduceSeconds: result.allreduceSeconds, ranks: world.size) + "\n").utf8))
                    observe(.progress(report, allreduceSeconds: result.allreduceSeconds))
                    if checkpointing { try checkpoint(trainer, history: history) }
                    if let v = spec.validation, report.step % v.every == 0 || last { try validate(pipeline, trainer, v, step: report.step) }
                    decision = last ? .proceed : decide()
                    if decision == .stop && !checkpointing { try checkpoint(trainer, history: history) }
                } catch {
                    failure = error
                    decision = .fail
                }
            }
            switch try agree(decision) {
            case .proceed: continue
            case .stop: outcome = .stopped(step: report.step)
            case .cancel: outcome = .cancelled(step: report.step)
            case .fail: throw failure ?? TrainingError.rankFailed(rank: 0, step: report.step)
            }
            log(outcome == .stopped(step: report.step) ? "stopped at step \(report.step) (checkpoint written)" : "cancelled at step \(report.step)")
            break
        }
        let outputs = try agreeing { () -> [String] in
            guard lead, outcome == .completed else { return [] }
            let written = try writeOutputs(trainer, to: out)
            try writePlot(history)
            log("done: \(written.joined(separator: ", "))")
            return written
        }
        return Summary(steps: trainer.step, finalLoss: history.last?.1, outputs: outputs, vaeEncodes: samples.encodes, outcome: outcome)
    }

    /// Rank 0's decision to every rank (its `fail` carries no error text: rank 0 throws the error).
    private func agree(_ decision: StepDecision) throws -> StepDecision {
        var byte = [decision.rawValue]
        try world.broadcast(bytes: &byte, root: 0)
        guard let value = byte.first.flatMap(StepDecision.init(rawValue:)) else {
            throw CommunicatorError(call: "decision broadcast", code: -1, message: "rank 0 sent \(byte)")
        }
        return value
    }

    /// Runs `body` on every rank, then counts the ranks whose `body` threw (one allreduce): all
    /// ranks go on together or all throw, a failing rank its own error, the others `rankFailed`.
    private func agreeing<T>(_ body: () throws -> T) throws -> T {
        var result: Result<T, any Error>
        do { result = .success(try body()) } catch { result = .failure(error) }
        if world.size > 1 {
            var failed: Float = if case .failure = result { 1 } else { 0 }
            try world.allreduceSum(&failed, count: 1)
            if failed > 0, case .success = result {
                throw TrainingError.rankFailed(rank: nil, step: nil)
            }
        }
        return try result.get()
    }

    // MARK: - Setup

    /// The job's convolution arithmetic, process-wide for this run (fp32 unless the job asks for bf16).
    func selectPrecision() throws {
        do {
            try ComputePrecision.select(spec.computePrecision == .bf16 ? .bf16 : .fp32)
        } catch let error as PrecisionError {
            throw TrainingError.invalidSetting(field: "compute_precision", reason: error.description)
        }
    }

    func makeTrainer(_ pipeline: StableDiffusionPipeline) throws -> CustomDiffusionTrainer {
        var s = TrainingSettings()
        switch spec.train {
        case .crossattnKV: s.trainable = .crossattnKV
        case .crossattn: s.trainable = .crossattn
        case let .patterns(p): s.trainable = .patterns(p)
        }
        s.learningRate = spec.learningRate
        s.embeddingLearningRate = spec.embeddingLearningRate
        s.scaleLearningRate = spec.scaleLr
        s.batchSize = spec.batchSize
        s.gradientAccumulation = spec.gradientAccumulation
        s.withPriorPreservation = spec.withPriorPreservation
        s.priorLossWeight = spec.priorLossWeight
        s.maxGradNorm = spec.maxGradNorm
        s.adam = AdamW.Hyperparameters(beta1: spec.adamBeta1, beta2: spec.adamBeta2, epsilon: spec.adamEpsilon, weightDecay: spec.adamWeightDecay)
        switch spec.lrSchedule {
        case .constantWithWarmup: s.schedule = .constantWithWarmup(warmup: spec.lrWarmupSteps)
        case .linear: s.schedule = .linear(warmup: spec.lrWarmupSteps, total: spec.steps)
        case .constant: s.schedule = .constant
        }
        s.detachStartToken = spec.detachStartToken
        guard spec.batchSize % spec.gradientAccumulation == 0 else {
            throw TrainingError.invalidSetting(field: "gradient_accumulation", reason: "batch_size \(spec.batchSize) does not split into \(spec.gradientAccumulation) equal micro-batches")
        }
        let tokens = spec.modifierTokens.map { (name: $0.token, initializer: $0.initializerToken ?? "ktn") }
        return try CustomDiffusionTrainer(models: pipeline.models, tokenizer: pipeline.tokenizer, tokens: tokens, settings: s)
    }

    func loadInstances() throws -> [ConceptDataset.Item] {
        var instances: [ConceptDataset.Item] = []
        for c in spec.concepts {
            for path in c.instanceImages { instances.append(ConceptDataset.Item(image: try load(path), prompt: c.instancePrompt, source: path)) }
        }
        return instances
    }

    /// Rank 0 generates the missing class images and sends every concept's class images to the
    /// other ranks, which write them into their own class folders (so no shared file system is
    /// needed); then every rank reads its folders.
    func distributeClassImages(_ pipeline: StableDiffusionPipeline) throws -> [ConceptDataset.Item] {
        guard spec.withPriorPreservation else { return [] }
        var classes: [ConceptDataset.Item] = []
        for (i, c) in spec.concepts.enumerated() {
            let folder = classFolder(i)
            // Rank 0's package: status byte (0 ok, 1 failed) + the folder's files.
            var message: [UInt8] = []
            var failure: (any Error)?
            if world.isLead {
                do {
                    _ = try ClassImages.ensure(count: c.numClassImages, in: folder, prompt: c.classPrompt ?? "", pipeline: pipeline,
                                               resolution: spec.resolution, seed: spec.seed &+ UInt64(i) &* 1_000_003, progress: log)
                    var package = FilePackage()
                    if world.size > 1 { try package.add(folder: folder) }
                    message = [0] + package.encoded()
                } catch {
                    failure = error
                    message = [1]
                }
            }
            if world.size > 1 { try world.broadcast(bytes: &message, root: 0) }
            if let failure { throw failure }
            guard message.first == 0 else { throw TrainingError.rankFailed(rank: 0, step: nil) }
            try agreeing {
                if !world.isLead { try FilePackage(decoding: Array(message.dropFirst())).write(under: folder) }
                let prompt = c.classPrompt ?? ""
                let files = ClassImages.files(in: folder).prefix(c.numClassImages)
                guard files.count == c.numClassImages else {
                    throw TrainingError.invalidSetting(field: "concept[\(i)].class_images",
                                                       reason: "rank \(world.rank) finds \(files.count) of \(c.numClassImages) class images in \(folder)")
                }
                for path in files {
                    classes.append(ConceptDataset.Item(image: try load(path), prompt: ClassImages.caption(for: path, default: prompt), source: path))
                }
            }
        }
        return classes
    }

    func makeSamples(_ pipeline: StableDiffusionPipeline, trainer: CustomDiffusionTrainer,
                     instances: [ConceptDataset.Item], classes: [ConceptDataset.Item]) throws -> TrainingSamples {
        let res = spec.resolution
        log("\(instances.count) instance images, \(classes.count) class images")
        let dataset = ConceptDataset(instances: instances, classes: classes, seed: spec.seed)
        let factor = pipeline.vaeScaleFactor
        return TrainingSamples(dataset: dataset,
                               augmentation: InstanceAugmentation(resolution: res, latentFactor: factor, augment: spec.augment,
                                                                  hflip: spec.hflip, centerCrop: spec.centerCrop),
                               classTransform: ClassImageTransform(resolution: res, hflip: spec.hflip, centerCrop: spec.centerCrop),
                               views: spec.latentCacheViews, vae: pipeline.models.vae, tokenizer: trainer.tokenizer,
                               trainTimesteps: trainer.noiseSchedule.trainTimesteps, seed: spec.seed)
    }

    /// Concept i's class-image folder: the job's, or one in the output folder.
    func classFolder(_ i: Int) -> String {
        spec.concepts[i].classImages ?? out.appendingPathComponent("class_images/concept-\(i)").path
    }

    private func load(_ path: String) throws -> RGBImage {
        let image = try ImageDecoder.decode(path: path)
        if min(image.width, image.height) < spec.resolution {
            log("warning: \(path) is \(image.width)x\(image.height), smaller than the resolution \(spec.resolution); it will be upscaled")
        }
        return image
    }

    // MARK: - Checkpoints, resume, outputs

    var checkpointsFolder: URL { out.appendingPathComponent("checkpoints") }

    static func checkpointName(_ step: Int) -> String { String(format: "step-%06d", step) }

    func checkpoint(_ trainer: CustomDiffusionTrainer, history: [(Int, Double)]) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: checkpointsFolder, withIntermediateDirectories: true)
        let final = checkpointsFolder.appendingPathComponent(Self.checkpointName(trainer.step))
        let partial = checkpointsFolder.appendingPathComponent(".partial-" + Self.checkpointName(trainer.step))
        try? fm.removeItem(at: partial)
        try fm.createDirectory(at: partial, withIntermediateDirectories: true)
        try trainer.saveState(to: partial.appendingPathComponent("state.safetensors").path, metadata: ["job": spec.name])
        _ = try writeOutputs(trainer, to: partial)
        try? fm.removeItem(at: final)
        try fm.moveItem(at: partial, to: final)
        try writePlot(history)
        log("checkpoint \(final.path)")
        observe(.checkpoint(step: trainer.step, folder: final))
    }

    /// Restores the newest complete checkpoint; returns the loss history up to it from the log.
    func resumeHistory(_ trainer: CustomDiffusionTrainer) throws -> [(Int, Double)] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: checkpointsFolder.path)) ?? [])
            .filter { $0.hasPrefix("step-") }.sorted()
        guard let newest = names.last else {
            log("no checkpoint in \(checkpointsFolder.path): starting from step 0")
            try? FileManager.default.removeItem(at: out.appendingPathComponent("train_log.jsonl"))
            return []
        }
        try trainer.loadState(from: checkpointsFolder.appendingPathComponent(newest).appendingPathComponent("state.safetensors").path)
        log("resumed from \(newest) (step \(trainer.step))")
        // Keep the log lines up to the checkpoint; steps after it are redone.
        let logURL = out.appendingPathComponent("train_log.jsonl")
        let lines = ((try? String(contentsOf: logURL, encoding: .utf8)) ?? "").split(separator: "\n")
        var kept: [String] = [], history: [(Int, Double)] = []
        for line in lines {
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let step = obj["step"] as? Int, step <= trainer.step else { continue }
            kept.append(String(line))
            history.append((step, obj["loss"] as? Double ?? .nan))
        }
        try (kept.joined(separator: "\n") + (kept.isEmpty ? "" : "\n")).write(to: logURL, atomically: true, encoding: .utf8)
        return history
    }

    func writeOutputs(_ trainer: CustomDiffusionTrainer, to folder: URL) throws -> [String] {
        let settings = (try? JSONEncoder().encode(spec)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        let concept = trainer.concept(settingsJSON: settings)
        var written: [String] = []
        for format in spec.outputs {
            switch format {
            case .diffusers:
                written += try DiffusersConceptFormat.write(concept, to: folder.appendingPathComponent("diffusers")).map(\.path)
            case .a1111:
                written += try A1111ConceptFormat.write(concept, name: spec.name, to: folder.appendingPathComponent("a1111")).map(\.path)
            case .bundle:
                let url = folder.appendingPathComponent("\(spec.name).concept.safetensors")
                try ConceptBundle.write(concept, to: url)
                written.append(url.path)
            }
        }
        return written
    }

    func writePlot(_ history: [(Int, Double)]) throws {
        try LossPlot.svg(steps: history.map(\.0), losses: history.map(\.1), title: "\(spec.name): training loss")
            .write(to: out.appendingPathComponent("loss.svg"), atomically: true, encoding: .utf8)
    }

    // MARK: - Validation and log

    func validate(_ pipeline: StableDiffusionPipeline, _ trainer: CustomDiffusionTrainer, _ v: ValidationSpec, step: Int) throws {
        let sampler = ConceptPipeline(pipeline)
        defer { sampler.reset() }
        // The trainer's live weights and token rows, without copies.
        pipeline.models.unet = trainer.unet
        pipeline.tokenizer = trainer.tokenizer
        pipeline.tokenEmbeddings = trainer.tokens.names.isEmpty ? nil : trainer.tokens.override
        var images: [Tensor] = []
        for prompt in v.prompts {
            var r = StableDiffusionPipeline.Request(prompt: prompt)
            r.negativePrompt = v.negativePrompt
            r.sampler = SamplerKind(rawValue: v.scheduler.rawValue) ?? .dpmSolverPP2M
            r.steps = v.steps
            r.guidance = Float(v.guidance)
            r.eta = Float(v.eta)
            r.width = v.width
            r.height = v.height
            r.count = v.count
            r.seed = spec.sampleSeed
            if let problem = pipeline.validate(r) {
                throw TrainingError.invalidSetting(field: "validation", reason: "prompt '\(prompt)': \(problem)")
            }
            images.append(pipeline.generate(r))
        }
        let folder = out.appendingPathComponent("samples")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let path = folder.appendingPathComponent(Self.checkpointName(step) + ".png").path
        try PNGImage.write(Self.grid(images), to: path)
        log("samples \(path)")
        observe(.samples(step: step, file: URL(fileURLWithPath: path)))
    }

    /// Rows of images [count, 3, H, W] (one row per prompt) → one image [1, 3, rows·H, count·W].
    public static func grid(_ rows: [Tensor]) -> Tensor {
        let (n, h, w) = (rows[0].shape[0], rows[0].shape[2], rows[0].shape[3])
        let out = Tensor(zeros: [1, 3, rows.count * h, n * w])
        let width = n * w
        for (r, images) in rows.enumerated() {
            for i in 0..<n {
                for c in 0..<3 {
                    for y in 0..<h {
                        let src = images.pointer + ((i * 3 + c) * h + y) * w
                        let dst = out.pointer + (c * rows.count * h + r * h + y) * width + i * w
                        dst.update(from: src, count: w)
                    }
                }
            }
        }
        return out
    }

    private func openLog() throws -> FileHandle {
        let url = out.appendingPathComponent("train_log.jsonl")
        if !FileManager.default.fileExists(atPath: url.path) { FileManager.default.createFile(atPath: url.path, contents: nil) }
        let handle = try FileHandle(forWritingTo: url)
        try handle.seekToEnd()
        return handle
    }

    static func logLine(_ r: CustomDiffusionTrainer.StepReport, samplesSeen: Int, allreduceSeconds: Double = 0, ranks: Int = 1) -> String {
        var fields: [String: Any] = ["step": r.step, "loss": r.losses.loss, "instance_loss": r.losses.instance,
                                     "grad_norm": r.update.gradientNorm, "clip_coef": r.update.clipCoefficient,
                                     "lr": r.update.learningRate, "embedding_lr": r.update.embeddingLearningRate,
                                     "seconds": r.seconds, "samples_seen": samplesSeen,
                                     "allreduce_seconds": allreduceSeconds, "ranks": ranks,
                                     "time": ISO8601DateFormatter().string(from: Date())]
        if let p = r.losses.prior { fields["prior_loss"] = p }
        let data = (try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "?" }
        let s = Int(seconds)
        return s >= 3600 ? "\(s / 3600)h\(s % 3600 / 60)m" : s >= 60 ? "\(s / 60)m\(s % 60)s" : "\(s)s"
    }
}
