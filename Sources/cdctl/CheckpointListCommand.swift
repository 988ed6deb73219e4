import ArgumentParser
import CDClient
import CDProtocol

struct CheckpointListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls", abstract: "List a job's checkpoints, or with --files the files of one.")

    @Argument(help: "The job id (j-…).")
    var id: String

    @Flag(help: "List the files of a checkpoint (--step, default the newest).")
    var files = false

    @Option(help: "The checkpoint's step (with --files).")
    var step: Int?

    @OptionGroup var options: ClientOptions

    func validate() throws {
        if step != nil, !files { throw ValidationError("--step lists the files of that checkpoint: add --files") }
    }

    func run() async throws {
        try await options.run { client in
            guard files else {
                let list = try await client.checkpoints(id)
                if options.json {
                    try Output.json(list)
                } else if list.isEmpty {
                    Output.note("cdctl: job \(id) has no checkpoint yet")
                } else {
                    let f = JobEventFormatter()
                    let rows = list.map { ["\($0.step)", f.time($0.time), $0.path] }
                    for line in Table.format(header: ["STEP", "WRITTEN", "PATH"], rows: rows) { Output.line(line) }
                }
                return ExitStatus.ok
            }
            let checkpoint = try await client.checkpoint(id, step: step)
            let listed = try await client.checkpointFiles(id, step: checkpoint.step)
            if options.json {
                try Output.json(listed)
            } else {
                let rows = listed.map { [$0.path, Output.size($0.size)] }
                for line in Table.format(header: ["FILE (step \(checkpoint.step))", "SIZE"], rows: rows) { Output.line(line) }
            }
            return ExitStatus.ok
        }
    }
}
