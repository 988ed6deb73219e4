import ArgumentParser
import Foundation

@main
struct CDCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cdctl",
        abstract: "Submit, follow and collect Custom Diffusion training jobs of a cdtrainerd daemon.",
        discussion: """
            The daemon and the token come from --server, --token or --token-file; else CDCTL_SERVER, CDCTL_TOKEN or CDCTL_TOKEN_FILE; else the config file (--config, CDCTL_CONFIG, or $XDG_CONFIG_HOME/cdctl/config.toml, by default ~/.config/cdctl/config.toml; keys server, token, token_file). The server defaults to http://127.0.0.1:8470. The daemon's token is in /etc/cdtrainerd/token on the head node.

            Every command prints text for people, or JSON on stdout with --json. Calls are retried while the daemon cannot be reached (0.5 s doubling to 8 s, for --retry-for seconds, default 60).

            Exit codes:
              0  success
              1  the job failed or was cancelled (submit --wait, logs -f)
              2  usage or input error: bad arguments, invalid job file or config,
                 request refused as invalid (HTTP 400, 413, 422)
              3  the daemon cannot be reached (after retrying)
              4  the daemon refused the token (HTTP 401, 403)
              5  not found: job, checkpoint, step or file (HTTP 404)
              6  the job's state does not allow it (HTTP 409: cancel a finished job)
              7  anything else: daemon error (HTTP 5xx), unexpected answer,
                 local file error
            """,
        subcommands: [
            SubmitCommand.self, ListCommand.self, StatusCommand.self, LogsCommand.self, CancelCommand.self,
            CheckpointCommand.self, SampleCommand.self, MergeCommand.self,
        ])

    /// ArgumentParser's own `main`, except that usage errors exit with 2 (its default is 64).
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            if exitCode(for: error) == .validationFailure {
                Output.note(fullMessage(for: error))
                Foundation.exit(ExitStatus.usage)
            }
            exit(withError: error)
        }
    }
}
