/// A Custom Diffusion training job as written in a job file (TOML, see `JobSpec.parse`), after
/// defaults are filled in. Field names in the file are the snake_case forms of the properties
/// (`batch_size` ↔ `batchSize`); the JSON coding (`Codable`) uses the same snake_case keys.
///
/// Defaults (spec = docs/custom-diffusion-spec.md; "HF" = diffusers' `train_custom_diffusion.py`):
///
/// | key | default | why |
/// |---|---|---|
/// | `name` | the job file's name without extension | |
/// | `model` | required | |
/// | `seed` | 42 | HF `--seed` (spec 9) |
/// | `steps` | 250 | HF/ADB README, one concept (spec 2.11; joint training used 500) |
/// | `batch_size` | 2 | HF/ADB README runs (spec 2.11; HF argparse default 4) |
/// | `gradient_accumulation` | 1 | HF |
/// | `learning_rate` | 1e-5 | HF (spec 9) |
/// | `embedding_learning_rate` | = `learning_rate` | HF: one parameter group |
/// | `scale_lr` | false | HF `--scale_lr` off |
/// | `train` | `"crossattn_kv"` | all references (spec 2.3) |
/// | `resolution` | 512 | all references |
/// | `checkpoint_every` | 250 | HF `--checkpointing_steps` |
/// | `max_grad_norm` | 1.0 (0 = no clipping) | HF (spec 2.9) |
/// | `prior_loss_weight` | 1.0 | HF |
/// | `augment` | true | HF, unless `--noaug` |
/// | `hflip` | false | HF `--hflip` off |
/// | `center_crop` | false | HF `--center_crop` off |
/// | `outputs` | `["diffusers", "bundle"]` | spec 10: diffusers-compatible files (+ our bundle) |
/// | `with_prior_preservation` | true | the method's setting (HF README, spec 2.0) |
/// | `lr_schedule` | `"constant"` | HF, ADB-LDM |
/// | `lr_warmup_steps` | 0 | HF README (argparse's 500 is ignored by "constant") |
/// | `adam_beta1`, `adam_beta2` | 0.9, 0.999 | HF, PyTorch |
/// | `adam_epsilon` | 1e-8 | HF |
/// | `adam_weight_decay` | 1e-2 | HF |
/// | `detach_start_token` | true | every reference (spec 2.6) |
/// | `latent_cache_views` | 8 | ours |
/// | `compute_precision` | `"fp32"` | diffusers' default (`--mixed_precision no`); `"bf16"` opts in |
/// | `sample_seed` | = `seed` | |
/// | `num_class_images` (top level: default of every concept) | 200 | HF `--num_class_images` (spec 4.1) |
/// | concept `initializer_token` | `ktn`, `pll`, `ucd` for the 1st, 2nd, 3rd distinct token | HF `--initializer_token` (spec 2.2) |
/// | `[validation]` `negative_prompt` | `""` | |
/// | `[validation]` `every` | = `checkpoint_every` | |
/// | `[validation]` `steps` | 25 | ours (DPM++ 2M) |
/// | `[validation]` `guidance` | 6.0 | ADB/HF README sampling (spec 9) |
/// | `[validation]` `scheduler` | `"dpmpp-2m"` | ours |
/// | `[validation]` `eta` | 1.0 (ddim only) | ADB/HF README sampling |
/// | `[validation]` `count` | 1 | |
/// | `[validation]` `width`, `height` | = `resolution` | |
public struct JobSpec: Codable, Sendable, Equatable {
    /// Job name, used in output file names: no `/`, `\`, control characters or leading `.`.
    public var name: String
    /// Base model: a diffusers folder, a single-file `.safetensors`/`.ckpt` checkpoint (path), or a
    /// model name the daemon knows. `resolvedFiles` makes an existing path absolute.
    public var model: String
    /// Seed of every random draw of the training run (sample stream, augmentation, noise);
    /// 0…Int64.max (TOML integers are signed 64-bit).
    public var seed: UInt64 = JobDefaults.seed
    /// Optimizer steps.
    public var steps: Int = JobDefaults.steps
    /// Instance images per optimizer step, global over all ranks and accumulated micro-batches
    /// (each comes with one class image when prior preservation is on).
    public var batchSize: Int = JobDefaults.batchSize
    /// Forward/backward passes run in micro-batches of `batchSize / gradientAccumulation` samples
    /// (its divisor; bounds the memory of one pass); over N ranks each rank runs its share in such micro-batches.
    public var gradientAccumulation: Int = JobDefaults.gradientAccumulation
    /// Learning rate of the UNet tensors (before `scaleLr`).
    public var learningRate: Double = JobDefaults.learningRate
    /// Learning rate of the modifier-token embedding rows (before `scaleLr`); the file's default is
    /// `learning_rate`. 0 keeps the tokens at their initializers.
    public var embeddingLearningRate: Double = JobDefaults.learningRate
    /// diffusers' `--scale_lr`: rates × `batchSize` (× 2 with prior preservation).
    public var scaleLr: Bool = false
    /// Which UNet parameters train.
    public var train: TrainSelection = .crossattnKV
    /// Training image side in pixels (a positive multiple of 8).
    public var resolution: Int = JobDefaults.resolution
    /// Steps between checkpoints (a resumable training state).
    public var checkpointEvery: Int = JobDefaults.checkpointEvery
    /// Global gradient-norm clip; nil: no clipping (written `max_grad_norm = 0` in a job file).
    public var maxGradNorm: Double? = JobDefaults.maxGradNorm
    /// Weight of the class-image (prior) loss.
    public var priorLossWeight: Double = JobDefaults.priorLossWeight
    /// Scale augmentation of instance images with caption words and loss mask (spec 2.4).
    public var augment: Bool = true
    /// Random horizontal flips (p = 0.5).
    public var hflip: Bool = false
    /// Center crops instead of random crops where an image is cut to the training square.
    public var centerCrop: Bool = false
    /// Files written at the end (and at checkpoints), in the order given.
    public var outputs: [OutputFormat] = JobDefaults.outputs
    /// Train with class images and the prior loss; false: no class images at all.
    public var withPriorPreservation: Bool = true
    public var lrSchedule: LRScheduleName = .constant
    /// Warm-up steps of `constant_with_warmup` and `linear` (0 ≤ warm-up ≤ steps).
    public var lrWarmupSteps: Int = 0
    public var adamBeta1: Double = JobDefaults.adamBeta1
    public var adamBeta2: Double = JobDefaults.adamBeta2
    public var adamEpsilon: Double = JobDefaults.adamEpsilon
    public var adamWeightDecay: Double = JobDefaults.adamWeightDecay
    /// Cross-attention K/V at the start token pass no gradient (every reference does this).
    public var detachStartToken: Bool = true
    /// Augmented views per instance image that are VAE-encoded once and cached; 0: encode every step.
    public var latentCacheViews: Int = JobDefaults.latentCacheViews
    /// Arithmetic of convolutions and frozen-weight linear products; nil (absent, as in jobs stored
    /// before it existed) is fp32.
    public var computePrecision: ComputePrecisionName?
    /// Seed of the validation images; the file's default is `seed`.
    public var sampleSeed: UInt64 = JobDefaults.seed
    /// The concepts trained jointly (at least one).
    public var concepts: [ConceptSpec]
    /// Validation sampling during training; nil: none.
    public var validation: ValidationSpec?

    /// A job with every default; `sampleSeed` is `seed`, `embeddingLearningRate` is `learningRate`.
    public init(name: String, model: String, concepts: [ConceptSpec], validation: ValidationSpec? = nil) {
        self.name = name
        self.model = model
        self.concepts = concepts
        self.validation = validation
    }

    /// The distinct modifier tokens of all concepts in order of first use, each with its initializer
    /// (nil only in a spec that `validate` rejects).
    public var modifierTokens: [ModifierTokenSpec] {
        var seen: [String: Int] = [:]
        var result: [ModifierTokenSpec] = []
        for c in concepts {
            guard let t = c.modifierToken else { continue }
            if let i = seen[t] {
                if result[i].initializerToken == nil { result[i].initializerToken = c.initializerToken }
            } else {
                seen[t] = result.count
                result.append(ModifierTokenSpec(token: t, initializerToken: c.initializerToken))
            }
        }
        return result
    }

    enum CodingKeys: String, CodingKey {
        case name, model, seed, steps
        case batchSize = "batch_size"
        case gradientAccumulation = "gradient_accumulation"
        case learningRate = "learning_rate"
        case embeddingLearningRate = "embedding_learning_rate"
        case scaleLr = "scale_lr"
        case train, resolution
        case checkpointEvery = "checkpoint_every"
        case maxGradNorm = "max_grad_norm"
        case priorLossWeight = "prior_loss_weight"
        case augment, hflip
        case centerCrop = "center_crop"
        case outputs
        case withPriorPreservation = "with_prior_preservation"
        case lrSchedule = "lr_schedule"
        case lrWarmupSteps = "lr_warmup_steps"
        case adamBeta1 = "adam_beta1"
        case adamBeta2 = "adam_beta2"
        case adamEpsilon = "adam_epsilon"
        case adamWeightDecay = "adam_weight_decay"
        case detachStartToken = "detach_start_token"
        case latentCacheViews = "latent_cache_views"
        case computePrecision = "compute_precision"
        case sampleSeed = "sample_seed"
        case concepts = "concept"
        case validation
    }
}

/// One concept: its instance images and prompt, its class (regularization) images, and its modifier token.
public struct ConceptSpec: Codable, Sendable, Equatable {
    /// Caption of every instance image, e.g. `photo of a <new1> cat`.
    public var instancePrompt: String
    /// The instance image files. After `parse`: the files as written when the job lists files, empty
    /// when it names a folder. After `resolvedFiles`/`load`: absolute paths, a folder expanded to
    /// its images sorted by path.
    public var instanceImages: [String]
    /// The instance image folder as written in the job file; empty when the job lists files.
    public var instanceImageSource: String
    /// Caption of generated class images (required with prior preservation).
    public var classPrompt: String?
    /// Folder of class images (a same-named `.txt` file is an image's caption); absolute after
    /// `resolvedFiles`. nil: class images are generated into a folder of the daemon's choosing.
    public var classImages: String?
    /// Class images used; generated with the base model when the folder holds fewer.
    public var numClassImages: Int
    /// The new token this concept's images teach (no whitespace); nil: only the UNet trains.
    public var modifierToken: String?
    /// The existing token whose embedding initializes `modifierToken`.
    public var initializerToken: String?

    public init(instancePrompt: String, instanceImageSource: String = "", instanceImages: [String] = [],
                classPrompt: String? = nil, classImages: String? = nil,
                numClassImages: Int = JobDefaults.numClassImages,
                modifierToken: String? = nil, initializerToken: String? = nil) {
        self.instancePrompt = instancePrompt
        self.instanceImages = instanceImages
        self.instanceImageSource = instanceImageSource
        self.classPrompt = classPrompt
        self.classImages = classImages
        self.numClassImages = numClassImages
        self.modifierToken = modifierToken
        self.initializerToken = initializerToken
    }

    enum CodingKeys: String, CodingKey {
        case instancePrompt = "instance_prompt"
        case instanceImages = "instance_images"
        case instanceImageSource = "instance_image_source"
        case classPrompt = "class_prompt"
        case classImages = "class_images"
        case numClassImages = "num_class_images"
        case modifierToken = "modifier_token"
        case initializerToken = "initializer_token"
    }
}

/// Validation images sampled during training (`[validation]` table).
public struct ValidationSpec: Codable, Sendable, Equatable {
    /// Prompts, each sampled `count` times (at least one).
    public var prompts: [String]
    public var negativePrompt: String = ""
    /// Steps between validation runs; the file's default is `checkpoint_every`.
    public var every: Int = JobDefaults.checkpointEvery
    /// Denoising steps (1…1000).
    public var steps: Int = JobDefaults.validationSteps
    /// Classifier-free guidance scale (≥ 0; 1 or less: no guidance).
    public var guidance: Double = JobDefaults.validationGuidance
    public var scheduler: SchedulerName = .dpmSolverPP2M
    /// DDIM η in [0, 1] (used by `ddim` only).
    public var eta: Double = JobDefaults.validationEta
    /// Images per prompt.
    public var count: Int = 1
    /// Image size in pixels (positive multiples of 8); the file's default is `resolution`.
    public var width: Int = JobDefaults.resolution
    public var height: Int = JobDefaults.resolution

    public init(prompts: [String]) { self.prompts = prompts }

    enum CodingKeys: String, CodingKey {
        case prompts
        case negativePrompt = "negative_prompt"
        case every, steps, guidance, scheduler, eta, count, width, height
    }
}

/// Which UNet parameters a job trains (spec 2.3); the modifier-token rows train in every mode.
/// In a job file: `train = "crossattn_kv"`, `"crossattn"`, or a list of diffusers-key globs.
public enum TrainSelection: Codable, Sendable, Equatable {
    /// attn2 `to_k.weight` and `to_v.weight` of every transformer block.
    case crossattnKV
    /// every attn2 parameter (`to_q`, `to_k`, `to_v`, `to_out.0`).
    case crossattn
    /// diffusers keys matching any glob (`*`, `?`), e.g. `["*attn2.to_k.weight", "up_blocks.3.*"]`.
    case patterns([String])

    /// The named selections, as spelled in a job file.
    public static let names = ["crossattn_kv", "crossattn"]

    /// A named selection ("crossattn_kv", "crossattn"), or nil.
    public init?(name: String) {
        switch name {
        case "crossattn_kv": self = .crossattnKV
        case "crossattn": self = .crossattn
        default: return nil
        }
    }

    /// The job-file name, nil for patterns.
    public var name: String? {
        switch self {
        case .crossattnKV: return "crossattn_kv"
        case .crossattn: return "crossattn"
        case .patterns: return nil
        }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) {
            guard let t = TrainSelection(name: s) else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "train: '\(s)' is not \"crossattn_kv\" or \"crossattn\"")
            }
            self = t
        } else {
            self = .patterns(try c.decode([String].self))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case let .patterns(p): try c.encode(p)
        default: try c.encode(name ?? "")
        }
    }
}

/// `compute_precision`: `fp32`, or `bf16` for convolutions and frozen-weight linear products (bf16
/// inputs and weights, fp32 accumulation; CPUs with AVX512_BF16). Attention, the trained weights,
/// their gradients and the optimizer are fp32 either way.
public enum ComputePrecisionName: String, Codable, Sendable, CaseIterable {
    case fp32, bf16
}

/// `lr_schedule` (the trainer's `LearningRateSchedule` with `lr_warmup_steps` and `steps`).
public enum LRScheduleName: String, Codable, Sendable, CaseIterable {
    case constant
    case constantWithWarmup = "constant_with_warmup"
    case linear
}

/// `outputs` entries (README "output formats").
public enum OutputFormat: String, Codable, Sendable, CaseIterable {
    /// diffusers' `pytorch_custom_diffusion_weights.safetensors` + `<token>.safetensors`.
    case diffusers
    /// A1111 extension delta + textual-inversion embedding.
    case a1111
    /// cdtrainer's own `NAME.concept.safetensors`.
    case bundle
}

/// `[validation] scheduler`; the raw values are `cdtrainerd sample`'s sampler names (CDModels `SamplerKind`).
public enum SchedulerName: String, Codable, Sendable, CaseIterable {
    case ddim
    case euler
    case eulerAncestral = "euler-a"
    case dpmSolverPP2M = "dpmpp-2m"
}

/// One modifier token and its initializer.
public struct ModifierTokenSpec: Codable, Sendable, Equatable {
    public var token: String
    public var initializerToken: String?
    public init(token: String, initializerToken: String?) {
        self.token = token
        self.initializerToken = initializerToken
    }
}

/// The job file's default values (see `JobSpec`).
public enum JobDefaults {
    public static let seed: UInt64 = 42
    public static let steps = 250
    public static let batchSize = 2
    public static let gradientAccumulation = 1
    public static let learningRate = 1e-5
    public static let resolution = 512
    public static let checkpointEvery = 250
    public static let maxGradNorm: Double? = 1.0
    public static let priorLossWeight = 1.0
    public static let outputs: [OutputFormat] = [.diffusers, .bundle]
    public static let adamBeta1 = 0.9
    public static let adamBeta2 = 0.999
    public static let adamEpsilon = 1e-8
    public static let adamWeightDecay = 1e-2
    public static let latentCacheViews = 8
    public static let numClassImages = 200
    /// Initializers of the 1st, 2nd and 3rd distinct modifier token without `initializer_token`
    /// (diffusers' `--initializer_token` default `ktn+pll+ucd`).
    public static let initializerTokens = ["ktn", "pll", "ucd"]
    public static let validationSteps = 25
    public static let validationGuidance = 6.0
    public static let validationEta = 1.0
    /// Instance image extensions (compared case-insensitively).
    public static let imageExtensions = ["jpg", "jpeg", "png", "webp"]
}
