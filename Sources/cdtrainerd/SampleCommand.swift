import ArgumentParser
import CDModels
import CDTensor
import CDTraining
import Foundation

struct SampleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample", abstract: "Generate images from a prompt with a Stable Diffusion 1.x/2.x checkpoint.")

    @Option(help: "A diffusers model folder or a single-file .safetensors checkpoint.")
    var model: String

    @Option(help: "For a single-file checkpoint: a diffusers folder whose configs and tokenizer to use (default: SD 1.5).")
    var configs: String?

    @Option(help: "The prompt.")
    var prompt: String

    @Option(help: "The negative prompt.")
    var negative = ""

    @Option(help: "ddim, euler, euler-a or dpmpp-2m.")
    var scheduler = "ddim"

    @Option(help: "Sampling steps.")
    var steps = 50

    @Option(help: "Classifier-free guidance scale (1 or less: no guidance).")
    var guidance: Float = 7.5

    @Option(help: "DDIM's η (0: deterministic).")
    var eta: Float = 0

    @Option(help: "Seed of the initial latents (cdtrainer's generator; seeds do not reproduce diffusers images).")
    var seed: UInt64 = 0

    @Option var width = 512
    @Option var height = 512

    @Option(help: "Images to generate (FILE-1.png, FILE-2.png, … when more than one).")
    var count = 1

    @Option(help: "Output PNG file.")
    var out: String

    @Option(name: .customLong("concept"),
            help: "A trained concept to apply, repeatable: our bundle, a diffusers output folder (or its weights and <token> files), an A1111 .delta.safetensors or embedding. FILE:STRENGTH scales it (default 1).")
    var concepts: [String] = []

    func run() throws {
        guard let kind = SamplerKind(rawValue: scheduler) else {
            throw ValidationError("--scheduler must be one of \(SamplerKind.allCases.map(\.rawValue).joined(separator: ", ")) (got \(scheduler))")
        }
        // Refuse an unwritable destination before minutes of sampling, not after.
        let folder = (out as NSString).deletingLastPathComponent
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder.isEmpty ? "." : folder, isDirectory: &isDirectory), isDirectory.boolValue,
              FileManager.default.isWritableFile(atPath: folder.isEmpty ? "." : folder) else {
            throw ValidationError("--out: the folder '\(folder.isEmpty ? "." : folder)' does not exist or is not writable")
        }
        if FileManager.default.fileExists(atPath: out, isDirectory: &isDirectory), isDirectory.boolValue {
            throw ValidationError("--out: '\(out)' is a folder; give a file name such as \(out)/image.png")
        }
        let pipeline = try StableDiffusionPipeline.load(model, configs: configs)
        let applied = ConceptPipeline(pipeline)
        for spec in concepts {
            let (path, strength) = try Self.parseConcept(spec)
            try applied.apply(try ConceptFile.load(path), strength: strength)
        }
        var request = StableDiffusionPipeline.Request(prompt: prompt)
        request.negativePrompt = negative
        request.sampler = kind
        request.steps = steps
        request.guidance = guidance
        request.eta = eta
        request.seed = seed
        request.width = width
        request.height = height
        request.count = count
        if let problem = pipeline.validate(request) { throw ValidationError(problem) }
        let started = Date()
        let images = pipeline.generate(request) { step, total in
            FileHandle.standardError.write(Data(String(format: "step %d/%d  %.1f s\n", step, total, Date().timeIntervalSince(started)).utf8))
        }
        for i in 0..<count {
            let path = count == 1 ? out : numbered(out, i + 1)
            try PNGImage.write(images, index: i, to: path)
            print(path)
        }
    }

    /// "FILE" or "FILE:STRENGTH" (a path may itself contain ':'; only a numeric suffix is a strength).
    static func parseConcept(_ spec: String) throws -> (String, Float) {
        if let colon = spec.lastIndex(of: ":"), let strength = Float(spec[spec.index(after: colon)...]) {
            guard strength.isFinite else { throw ValidationError("--concept \(spec): the strength must be a finite number") }
            return (String(spec[..<colon]), strength)
        }
        return (spec, 1)
    }

    private func numbered(_ path: String, _ n: Int) -> String {
        let ext = (path as NSString).pathExtension
        let base = ext.isEmpty ? path : String(path.dropLast(ext.count + 1))
        return "\(base)-\(n).\(ext.isEmpty ? "png" : ext)"
    }
}
