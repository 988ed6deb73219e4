import ArgumentParser
import CDClient
import CDProtocol

struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel",
        abstract: "Cancel a job.",
        discussion: "A queued job is cancelled at once; a running one stops at its next step boundary. Exit code 6 for a finished job.")

    @Argument(help: "The job id (j-…).")
    var id: String

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await options.run { client in
            let result = try await client.cancel(id)
            if options.json {
                try Output.json(result)
                return ExitStatus.ok
            }
            switch result.outcome {
            case .cancelled: Output.line("\(id): cancelled")
            case .requested: Output.line("\(id): cancel requested; the job stops at its next step boundary")
            case .alreadyCancelled: Output.line("\(id): was cancelled already")
            }
            return ExitStatus.ok
        }
    }
}
