import CDTensor
import Foundation

/// Text-to-image with a Stable Diffusion 1.x/2.x checkpoint, as diffusers' StableDiffusionPipeline:
/// prompt embeddings [negative; positive], N(0, I) latents × the sampler's initial σ, the sampler
/// loop with classifier-free guidance, VAE decode of latents / scaling_factor.
public final class StableDiffusionPipeline: @unchecked Sendable {
    public var models: StableDiffusionModels
    public var tokenizer: CLIPTokenizer
    /// Embeddings of added tokens (`<new1>` …), used in place of the text encoder's table rows.
    public var tokenEmbeddings: EmbeddingOverride?

    public init(models: StableDiffusionModels, tokenizer: CLIPTokenizer) {
        self.models = models
        self.tokenizer = tokenizer
    }

    /// A diffusers folder (its own tokenizer) or a single-file checkpoint (the shipped CLIP
    /// vocabulary; configs from `configs` or the SD 1.5 defaults).
    public static func load(_ path: String, configs: String? = nil) throws -> StableDiffusionPipeline {
        let models = try StableDiffusionModels.load(path, configs: configs)
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        let tokenizerFolder = isDirectory.boolValue ? path : configs
        let tokenizer = try tokenizerFolder.map { try CLIPTokenizer(directory: URL(fileURLWithPath: $0).appendingPathComponent("tokenizer")) }
            ?? CLIPTokenizer.standard()
        return StableDiffusionPipeline(models: models, tokenizer: tokenizer)
    }

    public struct Request: Sendable {
        public var prompt: String
        public var negativePrompt = ""
        public var sampler: SamplerKind = .ddim
        public var steps = 50
        public var guidance: Float = 7.5
        public var eta: Float = 0
        public var width = 512, height = 512
        public var count = 1
        public var seed: UInt64 = 0
        public init(prompt: String) { self.prompt = prompt }
    }

    /// Image pixels per latent pixel: 2^(VAE levels − 1), 8 for SD.
    public var vaeScaleFactor: Int { 1 << (models.vae.config.levels - 1) }

    /// Why a request cannot run, naming the field.
    public func validate(_ r: Request) -> String? {
        let multiple = vaeScaleFactor << (models.unet.config.levels - 1)
        if r.width <= 0 || r.height <= 0 || r.width % multiple != 0 || r.height % multiple != 0 {
            return "width and height must be positive multiples of \(multiple) (got \(r.width)x\(r.height))"
        }
        if let problem = samplerProblem(r.sampler, config: models.scheduler, steps: r.steps) { return problem }
        if r.count < 1 { return "count must be at least 1" }
        if !(r.guidance >= 0 && r.guidance.isFinite) { return "guidance must be a finite number ≥ 0" }
        if !(r.eta >= 0 && r.eta.isFinite) { return "eta must be a finite number ≥ 0" }
        let rows = models.textEncoder.config.vocabSize
        for text in [r.prompt, r.negativePrompt] {
            for id in tokenizer.encode(text) where id >= rows && tokenEmbeddings?.rowIds.contains(id) != true {
                return "the prompt uses \(tokenizer.token(for: id) ?? "token \(id)"), which has no trained embedding loaded"
            }
        }
        return nil
    }

    /// `last_hidden_state` of the padded prompts, [B, 77, D].
    public func encode(_ prompts: [String]) -> Tensor {
        models.textEncoder.forward(ids: prompts.map { tokenizer.encodePadded($0, length: tokenizer.modelMaxLength) },
                                   embeddingOverride: tokenEmbeddings)
    }

    /// Images [count, 3, H, W] in [0, 1]. `progress(step, steps)` is called after each step.
    public func generate(_ r: Request, progress: ((Int, Int) -> Void)? = nil) -> Tensor {
        precondition(validate(r) == nil, validate(r) ?? "")
        let guided = r.guidance > 1
        let prompts = (guided ? Array(repeating: r.negativePrompt, count: r.count) : []) + Array(repeating: r.prompt, count: r.count)
        let embeddings = encode(prompts)
        var rng = SplitMix64(seed: r.seed)
        let latents = rng.normalTensor([r.count, models.unet.config.inChannels, r.height / vaeScaleFactor, r.width / vaeScaleFactor])
        var sampler = makeSampler(r.sampler, config: models.scheduler, steps: r.steps, eta: r.eta)
        let steps = sampler.timesteps.count
        let final = denoise(unet: models.unet, sampler: &sampler, initialLatents: latents, embeddings: embeddings,
                            guidance: r.guidance, noise: { rng.normalTensor(latents.shape) }) { i, _, _, _, _ in progress?(i + 1, steps) }
        let z = Tensor(zeros: final.shape)
        scaleForward(final, by: 1 / models.vae.config.scalingFactor, out: z)
        return PNGImage.fromDecoded(models.vae.decode(z))
    }
}
