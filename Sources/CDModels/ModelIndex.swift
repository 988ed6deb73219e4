import Foundation

/// A diffusers pipeline's `model_index.json`: the pipeline class and, per component folder, the
/// (library, class) that saved it.
public struct ModelIndex: Sendable, Equatable {
    public let className: String
    public let components: [String: String]  // folder → class name (null components left out)

    public init(url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ModelError.missingFile(path: url.path, expected: "model_index.json")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ModelError.unreadableConfig(file: url.path, reason: "malformed JSON")
        }
        guard let name = object["_class_name"] as? String else {
            throw ModelError.unreadableConfig(file: url.path, reason: "missing field \"_class_name\"")
        }
        className = name
        var components: [String: String] = [:]
        for (key, value) in object where !key.hasPrefix("_") {
            if let pair = value as? [Any], pair.count == 2, let cls = pair[1] as? String { components[key] = cls }
        }
        self.components = components
    }

    /// Rejects pipelines whose parts this code cannot run (SDXL, other UNet or VAE classes).
    public func validate(file: String) throws {
        let expected: [String: [String]] = [
            "unet": ["UNet2DConditionModel"], "vae": ["AutoencoderKL"], "text_encoder": ["CLIPTextModel"],
            "tokenizer": ["CLIPTokenizer", "CLIPTokenizerFast"],
            "scheduler": ["DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler",
                          "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "LMSDiscreteScheduler"],
        ]
        for (component, classes) in expected.sorted(by: { $0.key < $1.key }) {
            guard let cls = components[component] else {
                throw ModelError.unsupportedConfig(file: file, field: component, value: "missing", supported: classes.joined(separator: ", "))
            }
            guard classes.contains(cls) else {
                throw ModelError.unsupportedConfig(file: file, field: component, value: cls, supported: classes.joined(separator: ", "))
            }
        }
        if className.contains("XL") {
            throw ModelError.unsupportedConfig(file: file, field: "_class_name", value: className, supported: "Stable Diffusion 1.x/2.x pipelines")
        }
    }
}
