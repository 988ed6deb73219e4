import CDTensor
import Foundation

/// The parts of a Stable Diffusion 1.x/2.x checkpoint: text encoder, UNet, VAE and the training
/// noise schedule (the tokenizer is loaded beside it).
public struct StableDiffusionModels: @unchecked Sendable {
    public let textEncoder: CLIPTextModel
    public var unet: UNet2DConditionModel
    public let vae: AutoencoderKL
    public var scheduler: SchedulerConfig

    public init(textEncoder: CLIPTextModel, unet: UNet2DConditionModel, vae: AutoencoderKL, scheduler: SchedulerConfig) {
        self.textEncoder = textEncoder
        self.unet = unet
        self.vae = vae
        self.scheduler = scheduler
    }

    /// A diffusers pipeline folder, or an original single-file checkpoint (`.safetensors`). For a
    /// single file the component configs come from `configs` (a diffusers folder) when given,
    /// else the SD 1.5 defaults.
    public static func load(_ path: String, configs: String? = nil) throws -> StableDiffusionModels {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ModelError.missingFile(path: path, expected: "a diffusers model folder or a .safetensors checkpoint")
        }
        if isDirectory.boolValue { return try loadFolder(URL(fileURLWithPath: path, isDirectory: true)) }
        return try loadSingleFile(path, configs: configs.map { URL(fileURLWithPath: $0, isDirectory: true) })
    }

    /// `unet/`, `vae/`, `text_encoder/`, `scheduler/` of a diffusers folder, checked against its
    /// `model_index.json` when there is one.
    public static func loadFolder(_ dir: URL) throws -> StableDiffusionModels {
        let index = dir.appendingPathComponent("model_index.json")
        if FileManager.default.fileExists(atPath: index.path) { try ModelIndex(url: index).validate(file: index.path) }
        return StableDiffusionModels(
            textEncoder: try CLIPTextModel.load(directory: dir.appendingPathComponent("text_encoder")),
            unet: try UNet2DConditionModel.load(directory: dir.appendingPathComponent("unet")),
            vae: try AutoencoderKL.load(directory: dir.appendingPathComponent("vae")),
            scheduler: try schedulerConfig(dir.appendingPathComponent("scheduler/scheduler_config.json")))
    }

    /// An LDM single-file checkpoint: `model.diffusion_model.*`, `first_stage_model.*`,
    /// `cond_stage_model.transformer.*`, mapped to diffusers names. Pickle files are refused.
    public static func loadSingleFile(_ path: String, configs: URL?) throws -> StableDiffusionModels {
        let ext = (path as NSString).pathExtension.lowercased()
        if ["ckpt", "pt", "pth", "bin"].contains(ext) { throw ModelError.pickleCheckpoint(file: path) }
        let file = try SafetensorsFile(path: path)
        if file.names.contains(where: { $0.hasPrefix("cond_stage_model.model.") }) {
            throw ModelError.unsupportedConfig(file: path, field: "cond_stage_model.model.* (OpenCLIP text encoder, SD 2.x)", value: "single-file layout",
                                               supported: "SD 1.x single files; for SD 2.x use a diffusers folder")
        }
        let unetConfig = try configs.map { try readConfig(UNet2DConditionConfig.self, from: $0.appendingPathComponent("unet/config.json")) } ?? .sd15
        let vaeConfig = try configs.map { try readConfig(AutoencoderKLConfig.self, from: $0.appendingPathComponent("vae/config.json")) } ?? .sd
        let textConfig = try configs.map { try readConfig(CLIPTextConfig.self, from: $0.appendingPathComponent("text_encoder/config.json")) } ?? .sd15
        let scheduler = try configs.map { try schedulerConfig($0.appendingPathComponent("scheduler/scheduler_config.json")) } ?? .sd
        try unetConfig.validate(file: path)
        try vaeConfig.validate(file: path)
        try textConfig.validate(file: path)

        // Each component reads the names under its prefix, and every one of those must map;
        // the rest of the file (other components, EMA copies, schedule buffers) is not its business.
        func foreign(_ own: String) -> (String) -> Bool { { !$0.hasPrefix(own) } }
        if !file.names.contains(where: { $0.hasPrefix(LDMKeyMap.unetPrefix) }) {
            let ema = file.names.contains { $0.hasPrefix("model_ema.") }
            throw ModelError.unsupportedConfig(file: path, field: LDMKeyMap.unetPrefix + "*", value: "absent",
                                               supported: ema ? "a checkpoint with the UNet weights; this one holds only EMA copies (model_ema.*), which cdtrainer does not read — export the EMA weights into model.diffusion_model.*"
                                                   : "an SD 1.x LDM checkpoint (model.diffusion_model.*, first_stage_model.*, cond_stage_model.transformer.*)")
        }
        let unetNames = Dictionary(uniqueKeysWithValues: LDMKeyMap.unet(unetConfig).map { ($1, $0) })
        let unet = try Weights.load(from: [file], specs: UNet2DConditionModel.parameterSpecs(unetConfig), source: path,
                                    rename: { unetNames[$0] }, ignore: foreign(LDMKeyMap.unetPrefix))
        let vaeNames = Dictionary(uniqueKeysWithValues: LDMKeyMap.vae(vaeConfig).map { ($1, $0) })
        let vae = try Weights.load(from: [file], specs: AutoencoderKL.parameterSpecs(vaeConfig), source: path,
                                   rename: { vaeNames[$0] }, ignore: foreign(LDMKeyMap.vaePrefix))
        let text = try CLIPTextModel.load(files: [file], config: textConfig, source: path, stripping: LDMKeyMap.textPrefix)
        return StableDiffusionModels(
            textEncoder: try CLIPTextModel(config: textConfig, weights: text, configFile: path),
            unet: try UNet2DConditionModel(config: unetConfig, weights: unet, configFile: path),
            vae: try AutoencoderKL(config: vaeConfig, weights: vae, configFile: path),
            scheduler: scheduler)
    }

    static func schedulerConfig(_ url: URL) throws -> SchedulerConfig {
        let c = try readConfig(SchedulerConfig.self, from: url)
        try c.validate(file: url.path)
        return c
    }
}
