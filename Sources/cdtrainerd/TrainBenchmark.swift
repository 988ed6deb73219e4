import ArgumentParser
import CDImages
import CDModels
import CDTensor
import CDTraining
import Foundation

/// `cdtrainerd bench train`: one Custom Diffusion optimizer step (text encoder with a trainable
/// modifier token → UNet forward with tape → loss → backward → clipping → AdamW) on SD1.5-size
/// models with random weights (no files), FLOPs counted by the kernels, and the ratio to the
/// sgemm throughput measured in the same run.
struct TrainBenchmark {
    let resolution: Int
    /// Instance samples per step; with `prior` each step also has as many class samples.
    let batch: Int
    let steps: Int
    let prior: Bool
    /// Also measure the UNet training tape (one more training forward into an arena of its own).
    var measureTape = false
    /// Take each step's batch from the job's data path (`TrainingSamples`: augmentation, VAE latent
    /// cache with this many views per image, tokenization, posterior draw) over `dataImages` random
    /// instance images instead of random latents; nil: random latents.
    var dataPathViews: Int?
    var dataImages = 4

    struct Report: Codable {
        let resolution: Int
        let batch: Int
        let prior: Bool
        /// Samples the UNet sees per step (batch, or 2 × batch with prior preservation).
        let samples: Int
        let trainable: String
        /// Best of the timed steps.
        let stepSeconds: Double
        let timedStepSeconds: [Double]
        let warmupSeconds: Double
        /// FLOPs of one step, counted by the kernels (during the warm-up step).
        let gflop: Double
        let flopsByKind: [String: Double]
        let gflops: Double
        /// The better of the sgemm rates measured before and after the steps.
        let sgemmGflops: Double
        let sgemmGflopsRuns: [Double]
        let ratioToSgemm: Double
        /// Wall seconds of the best timed step by kernel kind (conv, matmul, attention, norm,
        /// elementwise; outermost kernel calls on the trainer thread), "other" the rest (optimizer,
        /// loss, glue, thread hand-offs).
        let secondsByKind: [String: Double]
        let peakRssBytes: Int
        /// Peak RSS before the first step (weights, model construction).
        let peakRssBeforeStepsBytes: Int
        /// Resident memory after building the models and the trainer, before the first step.
        let rssAfterSetupBytes: Int
        /// Resident memory after the timed steps.
        let rssAfterStepsBytes: Int
        /// fp32 parameter bytes per component (text_encoder, unet, vae).
        let weightBytes: [String: Int]
        /// Bytes of the UNet training forward's tape (its arena's peak), with `--tape-size`.
        let unetTapeBytes: Int?
        /// With `--data-path`: the data path of the best timed step (batch construction on cached
        /// latents), seconds.
        let dataPathSeconds: Double?
        /// With `--data-path`: mean seconds of one VAE encode (a view's first use), the views
        /// encoded before the timed steps, and the instance images.
        let vaeEncodeSeconds: Double?
        /// With `--data-path`: FLOPs of one VAE encode, counted by the kernels.
        let vaeEncodeGflop: Double?
        let encodedViews: Int?
        let dataImages: Int?
        let finalLoss: Double
        /// Loss of the warm-up step and each timed step, in order (the loss curve).
        let stepLosses: [Double]
        /// `ComputePrecision` of convolutions and frozen-weight matmuls.
        let precision: String
        let threads: Int
    }

    func run(progress: (String) -> Void) throws -> Report {
        let sgemmBefore = measureSgemm()
        progress(String(format: "sgemm: %.1f GFLOP/s", sgemmBefore))
        let rssStart = currentRSS()

        // CLIP ViT-L/14 text tower: hidden 768, MLP 3072, 12 layers × 12 heads, quick_gelu, 77 positions, 49408 tokens.
        let textConfig = CLIPTextConfig.sd15
        let unetConfig = UNet2DConditionConfig.sd15, vaeConfig = AutoencoderKLConfig.sd
        let specs = (text: CLIPTextModel.parameterSpecs(textConfig), unet: UNet2DConditionModel.parameterSpecs(unetConfig),
                     vae: AutoencoderKL.parameterSpecs(vaeConfig))
        func bytes(_ s: [ParameterSpec]) -> Int { s.reduce(0) { $0 + $1.shape.reduce(1, *) } * MemoryLayout<Float>.stride }
        let weightBytes = ["text_encoder": bytes(specs.text), "unet": bytes(specs.unet), "vae": bytes(specs.vae)]

        progress("building SD1.5-size CLIP ViT-L, UNet and VAE with random weights…")
        let textEncoder = try CLIPTextModel(config: textConfig, weights: randomWeights(specs.text, seed: 2))
        let unet = try UNet2DConditionModel(config: unetConfig, weights: randomWeights(specs.unet, seed: 1))
        let vae = try AutoencoderKL(config: vaeConfig, weights: randomWeights(specs.vae, seed: 4))
        let rssModels = currentRSS()
        progress(String(format: "models built: RSS %.2f GiB (+%.2f GiB; fp32 parameters: CLIP %.2f, UNet %.2f, VAE %.2f GiB)",
                        gib(rssModels), gib(rssModels - rssStart), gib(weightBytes["text_encoder"]!),
                        gib(weightBytes["unet"]!), gib(weightBytes["vae"]!)))

        var settings = TrainingSettings()
        settings.trainable = .crossattnKV
        settings.batchSize = batch
        settings.withPriorPreservation = prior
        let trainer = try CustomDiffusionTrainer(
            models: StableDiffusionModels(textEncoder: textEncoder, unet: unet, vae: vae, scheduler: .sd),
            tokenizer: try CLIPTokenizer.standard(), tokens: [(name: "<new1>", initializer: "ktn")], settings: settings)
        let rssSetup = currentRSS(), peakBeforeSteps = peakRSS()
        progress(String(format: "trainer ready (%d trained UNet tensors): RSS %.2f GiB, peak so far %.2f GiB",
                        trainer.trainableKeys.count, gib(rssSetup), gib(peakBeforeSteps)))

        // One batch per step (warm-up included): random latents, noise and timesteps, masks of ones.
        var rng = SplitMix64(seed: 11)
        let samples = prior ? 2 * batch : batch
        let latent = resolution / 8
        let instanceIds = trainer.tokenizer.encodePadded("photo of a <new1> dog")
        let classIds = trainer.tokenizer.encodePadded("photo of a dog")
        let ids = (0..<samples).map { $0 < batch ? instanceIds : classIds }
        let trainSteps = trainer.noiseSchedule.trainTimesteps
        let batches = (0...steps).map { _ in
            let mask = Tensor(zeros: [samples, 1, latent, latent])
            mask.fill(1)
            return TrainingBatch(latents: rng.normalTensor([samples, 4, latent, latent]), noise: rng.normalTensor([samples, 4, latent, latent]),
                                 timesteps: (0..<samples).map { _ in Int(rng.next() % UInt64(trainSteps)) },
                                 mask: mask, ids: ids, instanceCount: batch)
        }
        // The job's data path: every view of every image is encoded before the timed steps (a job
        // pays each encode once, at the view's first use), so the steps time the per-step part.
        var dataPath: (samples: TrainingSamples, encodeSeconds: Double, encodeGflop: Double)?
        if let views = dataPathViews {
            let data = dataPathSamples(views: views, trainer: trainer, vae: vae)
            let start = DispatchTime.now().uptimeNanoseconds
            var g = 0
            FlopCounter.reset()
            FlopCounter.isEnabled = true
            while data.encodes < dataImages * max(views, 1) && g < 1000 * dataImages * max(views, 1) {
                _ = data.batch([g], withPrior: false)
                g += 1
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            FlopCounter.isEnabled = false
            let encodes = Double(max(data.encodes, 1))
            dataPath = (data, seconds / encodes, FlopCounter.totals.values.reduce(0, +) / encodes / 1e9)
            progress(String(format: "data path: %d VAE encodes of %dx%d views, %.3f s and %.1f GFLOP each", data.encodes, resolution, resolution,
                            dataPath!.encodeSeconds, dataPath!.encodeGflop))
        }
        var dataSeconds: [Double] = []
        func nextBatch(_ i: Int) -> TrainingBatch {
            guard let data = dataPath?.samples else { return batches[i] }
            let start = DispatchTime.now().uptimeNanoseconds
            let b = data.batch(Array((i * batch)..<((i + 1) * batch)), withPrior: false)
            dataSeconds.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            return b
        }

        // The warm-up step also counts the FLOPs (the work of a step does not depend on its data).
        FlopCounter.reset()
        FlopCounter.isEnabled = true
        // With --views 0 the data path encodes every step: counted here like the timed steps' work.
        let warmup = try trainer.step([nextBatch(0)])
        FlopCounter.isEnabled = false
        let counted = FlopCounter.totals
        let flops = counted.values.reduce(0, +)
        progress(String(format: "warm-up step: %.3f s, loss %.4f, RSS %.2f GiB, peak %.2f GiB",
                        warmup.seconds, warmup.losses.loss, gib(currentRSS()), gib(peakRSS())))

        var timed: [Double] = []
        var byKind: [[String: Double]] = []
        var last = warmup
        var losses = [warmup.losses.loss]
        for i in 1...steps {
            OpTimer.enable(true)
            last = try trainer.step([nextBatch(i)])
            OpTimer.enable(false)
            timed.append(last.seconds + (dataPath == nil ? 0 : dataSeconds.last!))
            var kinds = Dictionary(uniqueKeysWithValues: OpTimer.totals.map { ($0.key.name, $0.value) })
            kinds["other"] = max(0, last.seconds - kinds.values.reduce(0, +))
            byKind.append(kinds)
            losses.append(last.losses.loss)
            progress(String(format: "step %d: %.3f s, loss %.4f", i, last.seconds, last.losses.loss))
        }
        let peak = peakRSS(), rssAfterSteps = currentRSS()  // before the sgemm matrices below
        // Measured again after the steps: on a shared machine one measurement can catch a busy moment.
        let sgemmAfter = measureSgemm()
        progress(String(format: "sgemm after the steps: %.1f GFLOP/s", sgemmAfter))
        let sgemm = max(sgemmBefore, sgemmAfter)

        // The trainer's arena is private: its peak is measured on a training forward of our own.
        var tapeBytes: Int?
        if measureTape {
            let arena = Arena()
            let grads = ParameterGradients(keys: trainer.trainableKeys, specs: specs.unet)
            let context = trainer.textEncoder.forward(ids: ids, embeddingOverride: trainer.tokens.override)
            let b = batches[0]
            _ = trainer.unet.trainingForward(sample: b.latents, timesteps: b.timesteps.map(Float.init), context: context,
                                             grads: grads, arena: arena)
            tapeBytes = arena.peakFloats * MemoryLayout<Float>.stride
            progress(String(format: "UNet training tape: %.2f GiB", gib(tapeBytes!)))
        }
        let best = timed.min()!
        let bestIndex = timed.firstIndex(of: best)!
        let gflops = flops / best / 1e9
        return Report(resolution: resolution, batch: batch, prior: prior, samples: samples, trainable: settings.trainable.name,
                      stepSeconds: best, timedStepSeconds: timed, warmupSeconds: warmup.seconds,
                      gflop: flops / 1e9, flopsByKind: Dictionary(uniqueKeysWithValues: counted.map { ($0.key.name, $0.value) }),
                      gflops: gflops, sgemmGflops: sgemm, sgemmGflopsRuns: [sgemmBefore, sgemmAfter], ratioToSgemm: gflops / sgemm,
                      secondsByKind: byKind[bestIndex], peakRssBytes: peak, peakRssBeforeStepsBytes: peakBeforeSteps,
                      rssAfterSetupBytes: rssSetup, rssAfterStepsBytes: rssAfterSteps, weightBytes: weightBytes,
                      unetTapeBytes: tapeBytes,
                      dataPathSeconds: dataPath == nil ? nil : dataSeconds[bestIndex + 1],
                      vaeEncodeSeconds: dataPath?.encodeSeconds, vaeEncodeGflop: dataPath?.encodeGflop, encodedViews: dataPath?.samples.encodes,
                      dataImages: dataPath == nil ? nil : dataImages, finalLoss: last.losses.loss,
                      stepLosses: losses, precision: ComputePrecision.current.rawValue, threads: ThreadPool.shared.threadCount)
    }
}

extension TrainBenchmark {
    /// A job's sample stream over `dataImages` random RGB images of 1.25 × 1.1 the resolution
    /// (so the random scale and crop have room), prompt "photo of a <new1> dog", augmentation and
    /// flips on as in a default job.
    func dataPathSamples(views: Int, trainer: CustomDiffusionTrainer, vae: AutoencoderKL) -> TrainingSamples {
        var rng = SplitMix64(seed: 23)
        let (w, h) = (resolution * 5 / 4, resolution * 11 / 10)
        let images = (0..<dataImages).map { i in
            ConceptDataset.Item(image: RGBImage(width: w, height: h, pixels: (0..<(w * h * 3)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }),
                                prompt: "photo of a <new1> dog", source: "random-\(i)")
        }
        return TrainingSamples(dataset: ConceptDataset(instances: images, classes: [], seed: 5),
                               augmentation: InstanceAugmentation(resolution: resolution, latentFactor: 8, augment: true, hflip: true, centerCrop: false),
                               classTransform: ClassImageTransform(resolution: resolution, hflip: true, centerCrop: false),
                               views: views, vae: vae, tokenizer: trainer.tokenizer,
                               trainTimesteps: trainer.noiseSchedule.trainTimesteps, seed: 5)
    }
}

private func gib(_ bytes: Int) -> Double { Double(bytes) / Double(1 << 30) }

/// Resident set size of this process now (Linux /proc/self/statm; 0 where it is unavailable).
func currentRSS() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Time of one Custom Diffusion optimizer step (cross-attention K/V + one modifier token) on SD1.5-size models with random weights, against the sgemm throughput measured in the same run.")

    @Option(help: "Image resolution in pixels (latents are 1/8).")
    var res = 512

    @Option(help: "Instance samples per step.")
    var batch = 1

    @Option(help: "Timed optimizer steps after a warm-up (the best is reported).")
    var steps = 3

    @Flag(help: "Prior preservation: each step also has --batch class samples.")
    var prior = false

    @Flag(help: "Also measure the UNet training tape: one more training forward into an arena of its own, after the timed steps.")
    var tapeSize = false

    @Flag(help: "Take each step's batch from the job's data path (augmentation, cached VAE latents, tokenization) over random images; the step time includes it.")
    var dataPath = false

    @Option(help: "With --data-path: augmented views cached per image (a job's latent_cache_views; 0 encodes every step).")
    var views = 8

    @Option(help: "With --data-path: random instance images.")
    var images = 4

    @Option(help: "Arithmetic of convolutions and frozen-weight matmuls: fp32, or bf16 inputs and weights with fp32 accumulation (CPUs with AVX512_BF16).")
    var precision: ComputePrecision = .fp32

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        guard res > 0, res % 64 == 0 else { throw ValidationError("--res must be a positive multiple of 64") }
        guard batch >= 1, steps >= 1 else { throw ValidationError("--batch and --steps must be at least 1") }
        guard views >= 0, images >= 1 else { throw ValidationError("--views must be at least 0 and --images at least 1") }
        guard !(dataPath && prior) else { throw ValidationError("--data-path has no class images: use it without --prior") }
    }

    func run() throws {
        warnIfDebugBuild()
        _ = ThreadPool.shared
        try ComputePrecision.select(precision)
        var bench = TrainBenchmark(resolution: res, batch: batch, steps: steps, prior: prior, measureTape: tapeSize)
        if dataPath { bench.dataPathViews = views; bench.dataImages = images }
        let r = try bench.run { line in
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
        if json {
            try printJSON(r)
            return
        }
        let kinds = ["conv", "matmul", "attention"].map { $0 + String(format: " %.1f", (r.flopsByKind[$0] ?? 0) / 1e9) }
        let what = "Training step \(r.resolution)x\(r.resolution), batch \(r.batch)\(r.prior ? " + prior" : "") \(r.precision) "
            + "(\(r.samples) sample\(r.samples == 1 ? "" : "s") through the UNet), trainable \(r.trainable): "
        print(what + String(format: "%.3f s per optimizer step (best of %d; warm-up %.3f s)",
                            r.stepSeconds, r.timedStepSeconds.count, r.warmupSeconds))
        print(String(format: "  %.1f GFLOP per step (", r.gflop) + kinds.joined(separator: ", ")
              + String(format: "), %.1f GFLOP/s = %.2f x sgemm (%.1f GFLOP/s), %d threads",
                       r.gflops, r.ratioToSgemm, r.sgemmGflops, r.threads))
        print(String(format: "  peak RSS %.2f GiB (before the first step %.2f GiB; fp32 parameters %.2f GiB; RSS after setup %.2f GiB, after the steps %.2f GiB)",
                     gib(r.peakRssBytes), gib(r.peakRssBeforeStepsBytes), gib(r.weightBytes.values.reduce(0, +)),
                     gib(r.rssAfterSetupBytes), gib(r.rssAfterStepsBytes)))
        if let tape = r.unetTapeBytes {
            print(String(format: "  UNet training tape (activations kept for backward) %.2f GiB", gib(tape)))
        }
        if let data = r.dataPathSeconds, let encode = r.vaeEncodeSeconds, let encodes = r.encodedViews {
            print(String(format: "  data path (included above): %.4f s per step = %.2f%% of the step; VAE encode %.3f s per view, %.1f GFLOP (%.1f GFLOP/s; %d views of %d images encoded before the steps)",
                         data, 100 * data / r.stepSeconds, encode, r.vaeEncodeGflop ?? 0, (r.vaeEncodeGflop ?? 0) / encode,
                         encodes, r.dataImages ?? 0))
        }
        let order = OpTimer.Kind.allCases.map(\.name) + ["other"]
        print("  time by op kind: " + order.map { k in
            String(format: "%@ %.3f s (%.0f%%)", k, r.secondsByKind[k] ?? 0, 100 * (r.secondsByKind[k] ?? 0) / r.stepSeconds)
        }.joined(separator: ", "))
    }
}

extension ComputePrecision: ExpressibleByArgument {}
