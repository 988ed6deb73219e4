import ArgumentParser
import CDClient
import CDProtocol

struct SampleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample",
        abstract: "Render images with a checkpoint of a job applied; writes one PNG (several images side by side).",
        discussion: "Values left out take the daemon's sampling defaults.")

    @Argument(help: "The job id (j-…).")
    var id: String

    @Option(help: "The prompt (use the job's modifier token, e.g. \"photo of a <new1> cat\").")
    var prompt: String

    @Option(help: "The negative prompt.")
    var negativePrompt: String?

    @Option(help: "The checkpoint's step (default: the newest).")
    var step: Int?

    @Option(help: "How strongly the trained weights apply (1 = as trained).")
    var strength: Double?

    @Option(help: "Denoising steps.")
    var steps: Int?

    @Option(help: "Classifier-free guidance scale.")
    var guidance: Double?

    @Option(help: "dpmpp-2m, ddim, euler, euler-a, …")
    var scheduler: String?

    @Option(help: "Seed of the initial noise.")
    var seed: UInt64?

    @Option(help: "Image width in pixels (a multiple of 8).")
    var width: Int?

    @Option(help: "Image height in pixels (a multiple of 8).")
    var height: Int?

    @Option(help: "Number of images.")
    var count: Int?

    @Option(name: .shortAndLong, help: "The PNG file to write.")
    var output: String

    @OptionGroup var options: ClientOptions

    func validate() throws {
        if let step, step < 0 { throw ValidationError("--step must be 0 or more") }
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        for (name, v) in [("--width", width), ("--height", height)] {
            if let v, v < 8 || v % 8 != 0 { throw ValidationError("\(name) must be a positive multiple of 8 (got \(v))") }
        }
        if let strength, !strength.isFinite { throw ValidationError("--strength must be a number") }
        if let guidance, !guidance.isFinite { throw ValidationError("--guidance must be a number") }
    }

    var request: SampleRequest {
        SampleRequest(
            prompt: prompt, negativePrompt: negativePrompt, step: step, strength: strength, steps: steps, guidance: guidance,
            scheduler: scheduler, seed: seed, width: width, height: height, count: count)
    }

    struct Written: Encodable {
        var jobID: String
        var path: String
        var bytes: Int
        enum CodingKeys: String, CodingKey {
            case path, bytes
            case jobID = "job_id"
        }
    }

    func run() async throws {
        try await options.run { client in
            if !options.json { Output.note("cdctl: sampling (this can take minutes on CPU)…") }
            let png = try await client.sample(id, request)
            try LocalFiles.write(png, to: output)
            if options.json {
                try Output.json(Written(jobID: id, path: output, bytes: png.count))
            } else {
                Output.line(output)
            }
            return ExitStatus.ok
        }
    }
}
