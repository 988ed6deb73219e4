import ArgumentParser
import CDClient
import CDProtocol
import Foundation

struct SubmitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Submit a job file: upload the images it names, print the job id.",
        discussion: """
            Images the daemon already holds (same content) are not sent again. The submission carries an id, so a retried or repeated submission (same --submission-id) returns the job made the first time.

            With --wait, follows the job to its end: exit code 0 when it succeeded, 1 when it failed or was cancelled.

            Prints the job id on stdout; with --json the job as JSON instead (with --wait: the finished job).
            """)

    @Argument(help: "The job file (TOML).")
    var jobFile: String

    @Flag(help: "Wait for the job to finish, showing its progress.")
    var wait = false

    @Option(help: "The idempotency key of this submission (default: a new UUID).")
    var submissionID: String?

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await options.run { client in
            let spec = try JobSpec.load(path: jobFile)
            let submission = try JobSubmission(spec: spec, submissionID: submissionID ?? UUID().uuidString.lowercased())
            let json = options.json
            let showUploads = !json && Output.stderrIsTerminal
            let (result, uploads) = try await submission.submit(with: client) { p in
                if showUploads { Output.progress("\r\u{1B}[Kuploading \(p.index)/\(p.total) \(p.name)") }
            }
            if showUploads { Output.progress("\r\u{1B}[K") }
            let job = result.job
            if !json {
                Output.note(
                    "cdctl: \(uploads.uploaded.count) file(s) uploaded (\(Output.size(uploads.bytesUploaded))), "
                        + "\(uploads.alreadyStored.count) already on the daemon")
                if !result.created { Output.note("cdctl: the daemon had this submission already: job \(job.id) (\(job.state))") }
                Output.line(job.id)
            }
            guard wait else {
                if json { try Output.json(job) }
                return ExitStatus.ok
            }
            let display = ProgressDisplay(enabled: !json)
            let final = try await JobFollower(client: client).follow(job.id) { display.show($0) }
            display.finish(final)
            if json { try Output.json(final) }
            return ExitStatus.code(for: final.state)
        }
    }
}
