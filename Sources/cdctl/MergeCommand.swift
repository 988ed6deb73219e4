import ArgumentParser
import CDClient
import CDProtocol
import Foundation

struct MergeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Merge finished single-concept jobs into one concept file on the daemon (closed form, paper §3.2).",
        discussion: """
            The jobs must have succeeded on the same base model, each with at most one modifier token. Their \
            tokens become <new1>, <new2>, … in the order given. Writes DIR/merged.concept.safetensors (apply it \
            with `cdtrainerd sample --concept`).
            """)

    @Argument(help: "The job ids (j-…), in token order.")
    var ids: [String]

    @Option(help: "Category words per job, '+'-separated in order (default: each job's class prompt).")
    var categories: String?

    @Option(name: .shortAndLong, help: "The folder to write merged.concept.safetensors into (created when missing).")
    var output: String

    @OptionGroup var options: ClientOptions

    func validate() throws {
        guard !ids.isEmpty else { throw ValidationError("give the ids of the jobs to merge") }
        if let categories, categories.split(separator: "+", omittingEmptySubsequences: false).count != ids.count {
            throw ValidationError("--categories needs one entry per job (\(ids.count)), '+'-separated")
        }
    }

    struct Written: Encodable {
        var jobs: [String]
        var path: String
        var bytes: Int
    }

    func run() async throws {
        try await options.run { client in
            if !options.json { Output.note("cdctl: merging \(ids.count) job(s) on the daemon…") }
            let words = categories?.split(separator: "+", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            let data = try await client.merge(MergeRequest(jobs: ids, categories: words))
            try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
            let path = (output as NSString).appendingPathComponent("merged.concept.safetensors")
            try LocalFiles.write(data, to: path)
            if options.json {
                try Output.json(Written(jobs: ids, path: path, bytes: data.count))
            } else {
                Output.line(path)
            }
            return ExitStatus.ok
        }
    }
}
