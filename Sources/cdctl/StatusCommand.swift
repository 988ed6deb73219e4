import ArgumentParser
import CDClient
import CDProtocol
import Foundation

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show one job.")

    @Argument(help: "The job id (j-…).")
    var id: String

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await options.run { client in
            let job = try await client.job(id)
            if options.json {
                try Output.json(job)
            } else {
                for line in Self.describe(job) { Output.line(line) }
            }
            return ExitStatus.ok
        }
    }

    /// `key: value` lines.
    static func describe(_ j: Job, now: Date = Date()) -> [String] {
        let f = JobEventFormatter()
        var rows: [(String, String)] = [
            ("id", j.id), ("name", j.name),
            ("state", j.state.rawValue + (j.cancelRequested ? " (cancel requested)" : "")),
            ("model", j.spec.model),
            ("step", "\(j.step)/\(j.totalSteps)" + (j.totalSteps > 0 ? " (\(j.step * 100 / j.totalSteps)%)" : "")),
        ]
        if let loss = j.lastLoss { rows.append(("loss", JobEventFormatter.number(loss, "%.4f"))) }
        if let c = j.lastCheckpointStep { rows.append(("checkpoint", "step \(c)")) }
        rows.append(("submitted", f.time(j.createdAt)))
        if let s = j.startedAt {
            rows.append(("started", f.time(s)))
            rows.append(("running for", ProgressBar.duration((j.finishedAt ?? now).timeIntervalSince(s))))
        }
        if let e = j.finishedAt { rows.append(("finished", f.time(e))) }
        if let error = j.error { rows.append(("error", error)) }
        let width = rows.map(\.0.count).max() ?? 0
        return rows.map { k, v in k + ":" + String(repeating: " ", count: width - k.count + 1) + v }
    }
}
