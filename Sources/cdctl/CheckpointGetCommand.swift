import ArgumentParser
import CDClient
import CDProtocol

extension CheckpointFormat: ExpressibleByArgument {}

struct CheckpointGetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Download a checkpoint's files into a folder.",
        discussion: """
            diffusers: the files under diffusers/; a1111: under a1111/; bundle: *.concept.safetensors; all: every file but the training state (state.safetensors, added by --with-state to any format).

            Files keep their relative paths under the folder; each is written whole or not at all, and an existing file of the same name is replaced.
            """)

    @Argument(help: "The job id (j-…).")
    var id: String

    @Option(help: "The checkpoint's step (default: the newest).")
    var step: Int?

    @Option(help: "Which files: diffusers, a1111, bundle or all.")
    var format: CheckpointFormat = .all

    @Flag(help: "Also download the training state (state.safetensors).")
    var withState = false

    @Option(name: .shortAndLong, help: "The folder to write into (created when missing).")
    var output: String

    @OptionGroup var options: ClientOptions

    struct Downloaded: Encodable {
        var jobID: String
        var step: Int
        var files: [File]
        struct File: Encodable {
            var path: String
            var size: Int
            var localPath: String
            enum CodingKeys: String, CodingKey {
                case path, size
                case localPath = "local_path"
            }
        }
        enum CodingKeys: String, CodingKey {
            case step, files
            case jobID = "job_id"
        }
    }

    func run() async throws {
        try await options.run { client in
            let json = options.json
            let result = try await client.downloadCheckpoint(id, step: step, format: format, withState: withState, into: output) { f in
                if !json { Output.note("cdctl: downloading \(f.path) (\(Output.size(f.size)))") }
            }
            if json {
                try Output.json(Downloaded(
                    jobID: result.jobID, step: result.step,
                    files: result.files.map { .init(path: $0.file.path, size: $0.file.size, localPath: $0.localPath) }))
            } else {
                for f in result.files { Output.line(f.localPath) }
            }
            return ExitStatus.ok
        }
    }
}
