import ArgumentParser
import CDClient
import CDProtocol
import Foundation

struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List jobs, newest first.")

    @Option(help: ArgumentHelp("Only jobs in these states, comma-separated (\(JobState.allCases.map(\.rawValue).joined(separator: ", "))).", valueName: "states"))
    var state: String?

    @Option(help: "At most this many jobs (1…10000; default 100).")
    var limit: Int?

    @OptionGroup var options: ClientOptions

    func validate() throws {
        _ = try states()
        if let limit, !(1...10_000).contains(limit) { throw ValidationError("--limit must be 1…10000") }
    }

    func states() throws -> [JobState] {
        guard let state else { return [] }
        return try state.split(separator: ",").map { name in
            guard let s = JobState(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("unknown state '\(name)' (one of \(JobState.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            return s
        }
    }

    struct JobList: Encodable { var jobs: [Job] }

    func run() async throws {
        try await options.run { client in
            let jobs = try await client.jobs(states: try states(), limit: limit)
            if options.json {
                try Output.json(JobList(jobs: jobs))
                return ExitStatus.ok
            }
            let formatter = JobEventFormatter()
            let rows = jobs.map { j in
                [j.id, j.name, j.state.rawValue + (j.cancelRequested ? " (cancelling)" : ""), "\(j.step)/\(j.totalSteps)",
                 j.lastLoss.map { JobEventFormatter.number($0, "%.4f") } ?? "-", formatter.time(j.createdAt)]
            }
            for line in Table.format(header: ["ID", "NAME", "STATE", "STEP", "LOSS", "SUBMITTED"], rows: rows) { Output.line(line) }
            return ExitStatus.ok
        }
    }
}
