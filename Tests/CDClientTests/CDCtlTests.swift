import CDClient
import CDProtocol
import CDServer
import CDTestSupport
import Foundation
import Hummingbird
import NIOCore
import Testing

/// What one run of the `cdctl` binary did.
struct CLIRun: Sendable {
    var code: Int32
    var stdout: String
    var stderr: String
}

/// The `cdctl` binary built beside the test bundle.
func cdctlPath() throws -> String {
    let candidates = [
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("cdctl").path,
        Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("cdctl").path,
        Bundle.main.bundleURL.appendingPathComponent("cdctl").path,
    ]
    guard let path = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
        throw TestFailure("no cdctl binary beside the tests (looked at \(candidates)); build it with `swift build --build-tests`")
    }
    return path
}

/// Runs cdctl with `arguments` in an environment without the caller's CDCTL_* variables and with
/// `HOME`/`XDG_CONFIG_HOME` in `home` (so no real config file is read), plus `environment`.
func cdctl(_ arguments: [String], home: String, environment: [String: String] = [:]) async throws -> CLIRun {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try cdctlPath())
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CDCTL_") }
    env["HOME"] = home
    env["XDG_CONFIG_HOME"] = home + "/.config"
    env.merge(environment) { _, new in new }
    process.environment = env
    // Files, not pipes: nothing blocks however much the process writes.
    let id = UUID().uuidString
    let outPath = home + "/stdout-" + id, errPath = home + "/stderr-" + id
    guard FileManager.default.createFile(atPath: outPath, contents: nil), FileManager.default.createFile(atPath: errPath, contents: nil) else {
        throw TestFailure("cannot create the output files in \(home)")
    }
    process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
    process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
    let code: Int32 = try await withCheckedThrowingContinuation { continuation in
        process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
        do {
            try process.run()
        } catch {
            process.terminationHandler = nil
            continuation.resume(throwing: error)
        }
    }
    defer {
        try? FileManager.default.removeItem(atPath: outPath)
        try? FileManager.default.removeItem(atPath: errPath)
    }
    return CLIRun(
        code: code, stdout: try String(contentsOfFile: outPath, encoding: .utf8), stderr: try String(contentsOfFile: errPath, encoding: .utf8))
}

@Suite("the cdctl binary against a live APIServer")
struct CDCtlTests {
    @Test("submit --wait uploads, prints the id, follows to the end; exit 0 on success, 1 on failure")
    func submitAndWait() async throws {
        try await withClient { dir, state, client in
            let jobFile = try writeJobFolder(in: dir, steps: 8)
            let server = ["--server", client.server.absoluteString, "--token", apiToken]
            for end in [JobState.succeeded, .failed] {
                let trainer = Task {
                    let job = try await claimSubmittedJob(state.jobs)
                    try await playTraining(state.jobs, job.id, steps: 8, end: end)
                    return job.id
                }
                let run = try await cdctl(["submit", jobFile, "--wait"] + server, home: dir)
                let id = try await trainer.value
                #expect(run.code == (end == .succeeded ? 0 : 1), "\(run.stderr)")
                #expect(run.stdout == id + "\n")
                #expect(run.stderr.contains("step 8/8"))
                #expect(run.stderr.contains("checkpoint at step 4"))
                #expect(run.stderr.contains("job \(id) \(end.rawValue)"))
                if end == .failed { #expect(run.stderr.contains("the loss is NaN at step 8")) }
            }
            // The second submission found every image on the daemon.
            #expect(try state.jobs.list().count == 2)

            // --json: the submitted job; the same --submission-id gives the same job.
            let first = try await cdctl(["submit", jobFile, "--json", "--submission-id", "fixed-1"] + server, home: dir)
            let again = try await cdctl(["submit", jobFile, "--json", "--submission-id", "fixed-1"] + server, home: dir)
            #expect(first.code == 0 && again.code == 0)
            let a = try APICoding.decoder().decode(Job.self, from: Data(first.stdout.utf8))
            let b = try APICoding.decoder().decode(Job.self, from: Data(again.stdout.utf8))
            #expect(a.id == b.id && a.submissionID == "fixed-1" && a.state == .queued)
        }
    }

    @Test("a submit started while the daemon is down goes through once it starts, with one job")
    func submitRetries() async throws {
        try await withTemporaryDirectory { dir in
            try await withState(in: dir) { state in
                let jobFile = try writeJobFolder(in: dir)
                let port = try freePort()
                let args = ["submit", jobFile, "--server", "http://127.0.0.1:\(port)", "--token", apiToken, "--retry-for", "30"]
                let early = Task { try await cdctl(args, home: dir) }
                try await Task.sleep(for: .seconds(1))
                let run = try await withLiveServer(state, port: port) { _ in try await early.value }
                #expect(run.code == 0, "\(run.stderr)")
                #expect(run.stderr.contains("cannot reach http://127.0.0.1:\(port)") && run.stderr.contains("retrying in"))
                let jobs = try state.jobs.list()
                #expect(jobs.map(\.id) == [run.stdout.trimmingCharacters(in: .newlines)])
                #expect(try state.jobs.jobBlobs(jobs[0].id).count == 5)
            }
        }
    }

    @Test("exit codes: 2 bad input, 3 unreachable, 4 token refused, 5 not found, 6 conflict")
    func exitCodes() async throws {
        try await withClient { dir, state, client in
            let server = ["--server", client.server.absoluteString]
            let auth = server + ["--token", apiToken]

            let noToken = try await cdctl(["ls"] + server, home: dir)
            #expect(noToken.code == 4)
            #expect(noToken.stderr.contains("set CDCTL_TOKEN or --token"))
            #expect(noToken.stderr.contains("cdctl sent no token"))
            let wrong = try await cdctl(["ls"] + server, home: dir, environment: ["CDCTL_TOKEN": "wrong-token-0123456789abcdef"])
            #expect(wrong.code == 4 && wrong.stderr.contains("token from CDCTL_TOKEN"))

            let missing = try await cdctl(["status", "j-aaaaaaaaaaaa"] + auth, home: dir)
            #expect(missing.code == 5 && missing.stderr.contains("j-aaaaaaaaaaaa"))
            let done = try makeJob(state.jobs, in: .succeeded)
            let conflict = try await cdctl(["cancel", done.id] + auth, home: dir)
            #expect(conflict.code == 6)

            let port = try freePort()
            let down = try await cdctl(["ls", "--server", "http://127.0.0.1:\(port)", "--retry-for", "0"], home: dir)
            #expect(down.code == 3 && down.stderr.contains("cannot reach cdtrainerd"))

            try Data("name = \"x\"\nsteps = 0\n".utf8).write(to: URL(fileURLWithPath: dir + "/bad.toml"))
            let invalid = try await cdctl(["submit", dir + "/bad.toml", "--json"] + auth, home: dir)
            #expect(invalid.code == 2)
            #expect(invalid.stderr.contains("bad.toml: steps:") && invalid.stderr.contains("bad.toml: model:"))
            let errorJSON = try #require(try JSONSerialization.jsonObject(with: Data(invalid.stdout.utf8)) as? [String: Any])
            #expect(errorJSON["exit_code"] as? Int == 2)
            #expect((errorJSON["problems"] as? [[String: Any]])?.compactMap { $0["field"] as? String }.contains("steps") == true)

            #expect(try await cdctl(["ls", "--bogus"], home: dir).code == 2)
            #expect(try await cdctl(["ls", "--state", "sleeping"], home: dir).code == 2)
            #expect(try await cdctl(["status", "../metrics"] + auth, home: dir).code == 2)
            #expect(try await cdctl(["sample", "j-aaaaaaaaaaaa", "--prompt", "x", "--width", "65", "-o", "x.png"], home: dir).code == 2)
        }
    }

    @Test("ls, status, cancel, logs and ckpt print text and JSON; the config file supplies server and token")
    func readCommands() async throws {
        try await withClient { dir, state, client in
            try FileManager.default.createDirectory(atPath: dir + "/.config/cdctl", withIntermediateDirectories: true)
            try Data("server = \"\(client.server.absoluteString)\"\ntoken = \"\(apiToken)\"\n".utf8)
                .write(to: URL(fileURLWithPath: dir + "/.config/cdctl/config.toml"))
            let queued = try makeJob(state.jobs, in: .queued, name: "waiting")
            let job = try makeJob(state.jobs, in: .running, name: "busy")
            try await playTraining(state.jobs, job.id, steps: 4, end: .succeeded, pause: .zero)

            let ls = try await cdctl(["ls"], home: dir)
            #expect(ls.code == 0, "\(ls.stderr)")
            let lines = ls.stdout.split(separator: "\n")
            #expect(lines.count == 3 && lines[0].hasPrefix("ID ") && lines[1].hasPrefix(job.id) && lines[2].hasPrefix(queued.id))
            #expect(lines[1].contains("succeeded") && lines[1].contains("4/10"))
            let lsJSON = try await cdctl(["ls", "--json", "--state", "queued"], home: dir)
            struct List: Decodable { var jobs: [Job] }
            #expect(try APICoding.decoder().decode(List.self, from: Data(lsJSON.stdout.utf8)).jobs.map(\.id) == [queued.id])

            let status = try await cdctl(["status", job.id], home: dir)
            #expect(status.stdout.contains("state:") && status.stdout.contains("succeeded") && status.stdout.contains("4/10 (40%)"))
            let statusJSON = try await cdctl(["status", job.id, "--json"], home: dir)
            #expect(try APICoding.decoder().decode(Job.self, from: Data(statusJSON.stdout.utf8)).id == job.id)

            let logs = try await cdctl(["logs", job.id], home: dir)
            #expect(logs.code == 0)
            #expect(logs.stdout.contains("state: queued → running") && logs.stdout.contains("step 4/10  loss 0.2500  lr 1.00e-05  0.50 s/step"))
            let events = try await cdctl(["logs", job.id, "--json", "--after", "2"], home: dir)
            let decoded = try events.stdout.split(separator: "\n").map { try APICoding.decoder().decode(JobEvent.self, from: Data($0.utf8)) }
            #expect(decoded.first?.seq == 3 && decoded.last?.kind == .state)
            let followed = try await cdctl(["logs", "-f", job.id], home: dir)
            #expect(followed.code == 0 && followed.stdout == logs.stdout)

            let cancel = try await cdctl(["cancel", queued.id, "--json"], home: dir)
            #expect(try APICoding.decoder().decode(CancelResult.self, from: Data(cancel.stdout.utf8)).outcome == .cancelled)
            #expect(try await cdctl(["logs", "-f", queued.id], home: dir).code == 1)

            // Checkpoints: list, files, download by format.
            let ckptJob = try jobWithCheckpoints(state)
            let ckls = try await cdctl(["ckpt", "ls", ckptJob.id], home: dir)
            #expect(ckls.stdout.split(separator: "\n").map { $0.split(separator: " ").first.map(String.init) } == ["STEP", "5", "10"])
            let files = try await cdctl(["ckpt", "ls", ckptJob.id, "--files", "--step", "5", "--json"], home: dir)
            #expect(try APICoding.decoder().decode([CheckpointFile].self, from: Data(files.stdout.utf8)).count == CheckpointFixture.files.count)
            let get = try await cdctl(["ckpt", "get", ckptJob.id, "--format", "a1111", "-o", dir + "/dl"], home: dir)
            #expect(get.code == 0, "\(get.stderr)")
            #expect(allFiles(dir + "/dl") == ["a1111/<new1>.safetensors", "a1111/toy.delta.safetensors"])
            #expect(get.stdout == "\(dir)/dl/a1111/<new1>.safetensors\n\(dir)/dl/a1111/toy.delta.safetensors\n")
            let getState = try await cdctl(["ckpt", "get", ckptJob.id, "--step", "5", "--with-state", "--format", "bundle", "-o", dir + "/s", "--json"], home: dir)
            #expect(allFiles(dir + "/s") == ["state.safetensors", "toy.concept.safetensors"])
            #expect(getState.stdout.contains("\"local_path\""))
            let none = try await cdctl(["ckpt", "get", queued.id, "-o", dir + "/none"], home: dir)
            #expect(none.code == 5 && none.stderr.contains("no checkpoint"))
        }
    }

    @Test("sample sends every option as a SampleRequest and writes the PNG it gets back")
    func sample() async throws {
        try await withTemporaryDirectory { dir in
            let png = try Data(contentsOf: URL(fileURLWithPath: FixtureImages.pngA))
            let received = RequestLog()
            let router = Router()
            router.post("/v1/jobs/:id/samples") { request, context -> Response in
                let body = try await request.body.collect(upTo: 1 << 20)
                let sample = try APICoding.decoder().decode(SampleRequest.self, from: Data(body.readableBytesView))
                received.append(context.parameters.get("id") ?? "", sample, authorization: request.headers[.authorization])
                return Response(status: .ok, headers: [.contentType: "image/png"], body: .init(byteBuffer: ByteBuffer(bytes: png)))
            }
            let (ports, sink) = AsyncStream.makeStream(of: Int.self)
            let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), onServerRunning: {
                sink.yield($0.localAddress?.port ?? -1)
                sink.finish()
            })
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await app.runService() }
                var it = ports.makeAsyncIterator()
                let url = URL(string: "http://127.0.0.1:\(try #require(await it.next()))")!

                let client = APIClient(server: url, token: apiToken, retry: .none)
                let request = SampleRequest(prompt: "a <new1> toy", count: 2)
                #expect(try await client.sample("j-abcdefghijk2", request) == png)

                let run = try await cdctl([
                    "sample", "j-abcdefghijk2", "--prompt", "photo of a <new1> toy", "--negative-prompt", "blurry", "--step", "30",
                    "--strength", "0.8", "--steps", "20", "--guidance", "6.5", "--scheduler", "ddim", "--seed", "7", "--width", "64",
                    "--height", "128", "--count", "3", "-o", dir + "/out.png", "--server", url.absoluteString, "--token", apiToken,
                ], home: dir)
                #expect(run.code == 0, "\(run.stderr)")
                #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/out.png")) == png)
                #expect(run.stdout == dir + "/out.png\n")
                #expect(received.all.map(\.id) == ["j-abcdefghijk2", "j-abcdefghijk2"])
                #expect(received.all.map(\.authorization) == ["Bearer \(apiToken)", "Bearer \(apiToken)"])
                #expect(received.all.first?.request == request)
                #expect(received.all.last?.request == SampleRequest(
                    prompt: "photo of a <new1> toy", negativePrompt: "blurry", step: 30, strength: 0.8, steps: 20, guidance: 6.5,
                    scheduler: "ddim", seed: 7, width: 64, height: 128, count: 3))
                group.cancelAll()
            }
        }
    }
}

/// Requests seen by the stand-in sampling route.
final class RequestLog: @unchecked Sendable {
    struct Entry {
        var id: String
        var request: SampleRequest
        var authorization: String?
    }
    private let lock = NSLock()
    private var entries: [Entry] = []
    func append(_ id: String, _ request: SampleRequest, authorization: String?) {
        lock.withLock { entries.append(Entry(id: id, request: request, authorization: authorization)) }
    }
    var all: [Entry] { lock.withLock { entries } }
}
