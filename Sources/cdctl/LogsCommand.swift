import ArgumentParser
import CDClient
import CDProtocol

struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs",
        abstract: "Print a job's events: state changes, progress, checkpoints, log lines and errors.",
        discussion: "With -f, follows the job until it is finished; the exit code is then 0 when it succeeded, 1 when it failed or was cancelled.")

    @Argument(help: "The job id (j-…).")
    var id: String

    @Flag(name: .shortAndLong, help: "Follow new events until the job is finished.")
    var follow = false

    @Option(help: "Only events after this sequence number.")
    var after = 0

    @OptionGroup var options: ClientOptions

    func validate() throws {
        if after < 0 { throw ValidationError("--after must be 0 or more") }
    }

    func run() async throws {
        try await options.run { client in
            let formatter = JobEventFormatter()
            let json = options.json
            // One line per event; JSON: one object per line.
            func emit(_ e: JobEvent) throws {
                if json { try Output.json(e, compact: true) } else { Output.line(formatter.line(e)) }
            }
            if follow {
                let job = try await JobFollower(client: client).follow(id, after: after, onEvent: emit)
                return ExitStatus.code(for: job.state)
            }
            var last = after
            while true {
                let page = try await client.events(id, after: last, limit: Self.pageSize)
                for e in page {
                    try emit(e)
                    last = e.seq
                }
                if page.count < Self.pageSize { return ExitStatus.ok }
            }
        }
    }

    static let pageSize = 1000
}
