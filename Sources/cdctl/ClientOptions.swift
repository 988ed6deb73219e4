import ArgumentParser
import CDClient
import CDProtocol
import Foundation

/// The options every command takes: where the daemon is, the token, retries, and `--json`.
struct ClientOptions: ParsableArguments {
    @Option(help: "The daemon's address, e.g. http://head01:8470 (default: CDCTL_SERVER, the config file, or http://127.0.0.1:8470).")
    var server: String?

    @Option(help: "The API token (default: CDCTL_TOKEN, or the config file).")
    var token: String?

    @Option(help: "A file holding the API token.")
    var tokenFile: String?

    @Option(help: "The config file (default: CDCTL_CONFIG, or $XDG_CONFIG_HOME/cdctl/config.toml).")
    var config: String?

    @Option(help: ArgumentHelp("Seconds to keep retrying while the daemon cannot be reached (0: no retries).", valueName: "seconds"))
    var retryFor: Double = 60

    @Flag(help: "Print JSON on stdout (for scripts).")
    var json = false

    func validate() throws {
        guard retryFor >= 0, retryFor.isFinite else { throw ValidationError("--retry-for must be 0 or more seconds") }
    }

    /// Resolves the configuration, makes the client and runs `body`. A thrown error is printed
    /// (text on stderr; with `--json` also a JSON object on stdout) and becomes the exit code, as
    /// does a non-zero code `body` returns.
    func run(_ body: (APIClient) async throws -> Int32) async throws {
        var resolved: ClientConfig?
        let code: Int32
        do {
            let config = try ClientConfig.resolve(flags: .init(server: server, token: token, tokenFile: tokenFile, configFile: self.config))
            resolved = config
            let retryFor = self.retryFor
            let client = APIClient(server: config.server, token: config.token, retry: RetryPolicy(budget: retryFor)) { notice in
                Output.note(
                    "cdctl: cannot reach \(notice.server): \(notice.reason); retrying in "
                        + String(format: "%.1f", notice.delay) + " s (--retry-for \(Int(retryFor)))")
            }
            code = try await body(client)
        } catch {
            code = ExitStatus.code(for: error)
            report(error, config: resolved, code: code)
        }
        if code != ExitStatus.ok { throw ExitCode(code) }
    }

    func report(_ error: any Error, config: ClientConfig?, code: Int32) {
        var text = "\(error)"
        if let e = error as? APIClientError, e.status == 401 || e.status == 403 {
            text += "\n" + (config?.tokenSource.map { "(cdctl sent the token from \($0))" } ?? "(cdctl sent no token: none is configured)")
        }
        Output.note("cdctl: " + text)
        guard json else { return }
        let api = error as? APIClientError
        try? Output.json(ErrorOutput(
            error: api?.serverMessage ?? "\(error)", exitCode: code, status: api?.status,
            problems: api?.problems.isEmpty == false ? api?.problems : (error as? JobFileError)?.problems,
            missingBlobs: api?.missingBlobs.isEmpty == false ? api?.missingBlobs : nil))
    }
}

/// The JSON of a failed command (`--json`).
struct ErrorOutput: Encodable {
    var error: String
    var exitCode: Int32
    var status: Int?
    var problems: [JobFileError.Problem]?
    var missingBlobs: [APIErrorResponse.MissingBlob]?

    enum CodingKeys: String, CodingKey {
        case error, status, problems
        case exitCode = "exit_code"
        case missingBlobs = "missing_blobs"
    }
}
