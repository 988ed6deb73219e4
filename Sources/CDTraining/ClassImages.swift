import CDImages
import CDModels
import CDTensor
import Foundation

/// Regularization ("class") images of one concept (spec 4.1): the images of its folder, each with
/// the class prompt or its same-named `.txt` caption; when the folder holds fewer than asked, the
/// rest are generated with the base model from the class prompt and saved into the folder as
/// `generated-NNNN-seed-S.png`, so a rerun finds and reuses them.
public enum ClassImages {
    public static let imageExtensions: Set<String> = ["png", "jpg", "jpeg", "webp"]

    /// Image files of a folder in name order (hidden files skipped).
    public static func files(in folder: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.filter { !$0.hasPrefix(".") && imageExtensions.contains(($0 as NSString).pathExtension.lowercased()) }
            .sorted().map { (folder as NSString).appendingPathComponent($0) }
    }

    /// Makes sure `folder` holds at least `count` images, generating the missing ones (each with its
    /// own seed derived from `seed` and its number). `progress` gets one line per generated image.
    public static func ensure(count: Int, in folder: String, prompt: String, pipeline: StableDiffusionPipeline, resolution: Int,
                              seed: UInt64, steps: Int = 25, guidance: Float = 6, progress: (String) -> Void) throws -> [String] {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        var have = files(in: folder)
        var n = 0
        while have.count < count {
            let imageSeed = seed &+ UInt64(n) &* 7919
            let path = (folder as NSString).appendingPathComponent(String(format: "generated-%04d-seed-%llu.png", n, imageSeed))
            n += 1
            if FileManager.default.fileExists(atPath: path) { continue }
            var request = StableDiffusionPipeline.Request(prompt: prompt)
            request.sampler = .dpmSolverPP2M
            request.steps = steps
            request.guidance = guidance
            request.width = resolution
            request.height = resolution
            request.seed = imageSeed
            if let problem = pipeline.validate(request) {
                throw TrainingError.invalidSetting(field: "class images", reason: "cannot generate '\(prompt)': \(problem)")
            }
            let started = Date()
            try PNGImage.write(pipeline.generate(request), to: path)
            progress(String(format: "class image %d/%d for '%@' (%.1f s): %@", have.count + 1, count, prompt, Date().timeIntervalSince(started), path))
            have = files(in: folder)
        }
        return Array(have.prefix(count))
    }

    /// The caption of a class image: its `.txt` sibling's text when present, else `prompt`.
    public static func caption(for image: String, default prompt: String) -> String {
        let txt = (image as NSString).deletingPathExtension + ".txt"
        guard let text = try? String(contentsOfFile: txt, encoding: .utf8) else { return prompt }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return trimmed.isEmpty ? prompt : trimmed
    }
}
