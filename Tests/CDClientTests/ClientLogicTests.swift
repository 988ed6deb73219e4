import CDClient
import CDProtocol
import Foundation
import Testing

@Suite("client logic without a server")
struct ClientLogicTests {
    // MARK: Checkpoint selection

    static let listing = CheckpointFixture.files.sorted().map { CheckpointFile(path: $0, size: 1) }

    @Test("formats pick their files; the training state only with withState")
    func formatSelection() {
        func paths(_ f: CheckpointFormat, _ withState: Bool = false) -> [String] {
            CheckpointSelection.files(Self.listing, format: f, withState: withState).map(\.path)
        }
        #expect(paths(.diffusers) == ["diffusers/<new1>.safetensors", "diffusers/pytorch_custom_diffusion_weights.safetensors"])
        #expect(paths(.a1111) == ["a1111/<new1>.safetensors", "a1111/toy.delta.safetensors"])
        #expect(paths(.bundle) == ["toy.concept.safetensors"])
        #expect(paths(.all) == CheckpointFixture.files.sorted().filter { $0 != "state.safetensors" })
        #expect(paths(.all, true) == CheckpointFixture.files.sorted())
        #expect(paths(.bundle, true) == ["state.safetensors", "toy.concept.safetensors"])
        #expect(CheckpointSelection.files([], format: .all).isEmpty)
    }

    @Test("the newest checkpoint is the highest step; a given step must exist")
    func checkpointChoice() {
        let t = Date(timeIntervalSince1970: 0)
        let list = [CheckpointInfo(step: 30, path: "a", time: t), CheckpointInfo(step: 60, path: "b", time: t), CheckpointInfo(step: 45, path: "c", time: t)]
        #expect(CheckpointSelection.checkpoint(list, step: nil)?.step == 60)
        #expect(CheckpointSelection.checkpoint(list, step: 45)?.path == "c")
        #expect(CheckpointSelection.checkpoint(list, step: 50) == nil)
        #expect(CheckpointSelection.checkpoint([], step: nil) == nil)
    }

    @Test("paths that could leave the output folder are refused")
    func pathSafety() async throws {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/.", "a\\..\\b", "a/b/", "x\0y"] {
            #expect(CheckpointSelection.safeComponents(bad) == nil, "\(bad.debugDescription)")
        }
        #expect(CheckpointSelection.safeComponents("diffusers/<new1>.safetensors") == ["diffusers", "<new1>.safetensors"])
        #expect(CheckpointSelection.safeComponents("..a/b..") == ["..a", "b.."])

        try await withTemporaryDirectory { dir in
            let root = dir + "/out"
            #expect(try LocalFiles.destination(root: root, relativePath: "a/b/c.bin") == root + "/a/b/c.bin")
            #expect(FileManager.default.fileExists(atPath: root + "/a/b"))
            #expect(throws: ClientFileError.self) { try LocalFiles.destination(root: root, relativePath: "../escape.bin") }
            // A link inside the folder is never written through.
            try FileManager.default.createDirectory(atPath: dir + "/elsewhere", withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: root + "/link", withDestinationPath: dir + "/elsewhere")
            #expect(throws: ClientFileError.self) { try LocalFiles.destination(root: root, relativePath: "link/x.bin") }
            try Data().write(to: URL(fileURLWithPath: root + "/file"))
            #expect(throws: ClientFileError.self) { try LocalFiles.destination(root: root, relativePath: "file/x.bin") }
            #expect(throws: ClientFileError.self) { try LocalFiles.destination(root: root, relativePath: "a") }
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/elsewhere").isEmpty)

            try LocalFiles.write(Data("one".utf8), to: root + "/w.txt")
            try LocalFiles.write(Data("two".utf8), to: root + "/w.txt")
            #expect(try String(contentsOfFile: root + "/w.txt", encoding: .utf8) == "two")
            #expect(try FileManager.default.contentsOfDirectory(atPath: root).sorted() == ["a", "file", "link", "w.txt"])
        }
    }

    // MARK: Configuration

    /// A config folder in `dir` with `text` as `cdctl/config.toml`, and a token file beside it.
    func writeConfig(_ dir: String, _ text: String) throws {
        try FileManager.default.createDirectory(atPath: dir + "/xdg/cdctl", withIntermediateDirectories: true)
        try Data(text.utf8).write(to: URL(fileURLWithPath: dir + "/xdg/cdctl/config.toml"))
        try Data("file-token-0123456789abcdef\n".utf8).write(to: URL(fileURLWithPath: dir + "/xdg/cdctl/token"))
    }

    @Test("flags beat the environment, which beats the config file, which beats the default")
    func configPrecedence() async throws {
        try await withTemporaryDirectory { dir in
            let none = try ClientConfig.resolve(flags: .init(), environment: ["HOME": dir])
            #expect(none == ClientConfig(server: URL(string: "http://127.0.0.1:8470")!, token: nil, serverSource: "default", tokenSource: nil))

            try writeConfig(dir, "server = \"http://head01:8470\"\ntoken_file = \"token\"\n")
            let file = dir + "/xdg/cdctl/config.toml"
            let env = ["HOME": dir + "/home", "XDG_CONFIG_HOME": dir + "/xdg"]
            let fromFile = try ClientConfig.resolve(flags: .init(), environment: env)
            #expect(fromFile.server.absoluteString == "http://head01:8470" && fromFile.serverSource == file)
            #expect(fromFile.token == "file-token-0123456789abcdef" && fromFile.tokenSource == dir + "/xdg/cdctl/token")

            var withEnv = env
            withEnv["CDCTL_SERVER"] = "head02:9000"
            withEnv["CDCTL_TOKEN"] = "env-token-0123456789abcdef"
            let fromEnv = try ClientConfig.resolve(flags: .init(), environment: withEnv)
            #expect(fromEnv.server.absoluteString == "http://head02:9000" && fromEnv.serverSource == "CDCTL_SERVER")
            #expect(fromEnv.token == "env-token-0123456789abcdef" && fromEnv.tokenSource == "CDCTL_TOKEN")

            let fromFlags = try ClientConfig.resolve(
                flags: .init(server: "https://head03", token: "flag-token-0123456789abcdef"), environment: withEnv)
            #expect(fromFlags.server.absoluteString == "https://head03" && fromFlags.serverSource == "--server")
            #expect(fromFlags.token == "flag-token-0123456789abcdef" && fromFlags.tokenSource == "--token")

            // A token file flag beats the token in the environment.
            let tokenFile = try ClientConfig.resolve(flags: .init(tokenFile: dir + "/xdg/cdctl/token"), environment: withEnv)
            #expect(tokenFile.token == "file-token-0123456789abcdef")

            // Without XDG_CONFIG_HOME the file is under $HOME/.config.
            try FileManager.default.createDirectory(atPath: dir + "/home/.config/cdctl", withIntermediateDirectories: true)
            try Data("server = \"http://homehost:1\"\ntoken = \"home-token-0123456789abcdef\"\n".utf8)
                .write(to: URL(fileURLWithPath: dir + "/home/.config/cdctl/config.toml"))
            let home = try ClientConfig.resolve(flags: .init(), environment: ["HOME": dir + "/home"])
            #expect(home.server.absoluteString == "http://homehost:1" && home.token == "home-token-0123456789abcdef")
            // --config names another file.
            let explicit = try ClientConfig.resolve(flags: .init(configFile: file), environment: ["HOME": dir + "/home"])
            #expect(explicit.server.absoluteString == "http://head01:8470")
        }
    }

    @Test("config mistakes are errors that name the file and the key")
    func configErrors() async throws {
        try await withTemporaryDirectory { dir in
            let env = ["HOME": dir, "XDG_CONFIG_HOME": dir + "/xdg"]
            #expect(throws: ClientConfigError.self) { try ClientConfig.resolve(flags: .init(configFile: dir + "/nothere.toml"), environment: env) }
            try writeConfig(dir, "server = \"http://h:1\"\ntokn = \"x\"\n")
            let unknown = #expect(throws: ClientConfigError.self) { try ClientConfig.resolve(flags: .init(), environment: env) }
            #expect(unknown?.message.contains("unknown key 'tokn'") == true)
            #expect(unknown?.message.contains(dir + "/xdg/cdctl/config.toml") == true)
            // Flags that give everything never read the broken file.
            #expect(throws: Never.self) { try ClientConfig.resolve(flags: .init(server: "h:1", token: "t-0123456789abcdef"), environment: env) }
            try writeConfig(dir, "server = 8470\n")
            #expect(throws: ClientConfigError.self) { try ClientConfig.resolve(flags: .init(), environment: env) }
            try writeConfig(dir, "token_file = \"missing\"\n")
            let missing = #expect(throws: ClientConfigError.self) { try ClientConfig.resolve(flags: .init(), environment: env) }
            #expect(missing?.message.contains(dir + "/xdg/cdctl/missing") == true)
            #expect(throws: ClientConfigError.self) { try ClientConfig.resolve(flags: .init(server: "ftp://h"), environment: env) }
            #expect(throws: ClientConfigError.self) { try ClientConfig.resolve(flags: .init(server: "h:1", token: "has space"), environment: env) }
        }
    }

    // MARK: Retry policy

    @Test("backoff doubles from 0.5 s to 8 s and the last pause is cut to the budget")
    func retryPolicy() {
        let p = RetryPolicy.standard
        #expect((1...7).map { p.delay(afterFailure: $0) } == [0.5, 1, 2, 4, 8, 8, 8])
        #expect(p.nextDelay(afterFailure: 1, elapsed: 0) == 0.5)
        #expect(p.nextDelay(afterFailure: 9, elapsed: 57) == 3)
        #expect(p.nextDelay(afterFailure: 9, elapsed: 60) == nil)
        #expect(RetryPolicy.none.nextDelay(afterFailure: 1, elapsed: 0) == nil)
        #expect(RetryPolicy.isConnectionFailure(URLError(.cannotConnectToHost)))
        #expect(RetryPolicy.isConnectionFailure(URLError(.networkConnectionLost)))
        #expect(!RetryPolicy.isConnectionFailure(URLError(.cannotFindHost)))
        #expect(!RetryPolicy.isConnectionFailure(APIClientError.badResponse("x")))
    }

    // MARK: Presentation

    static func event(_ seq: Int, _ kind: JobEventKind, _ payload: JSONValue, at seconds: Double = 0) -> JobEvent {
        JobEvent(jobID: "j-aaaaaaaaaaaa", seq: seq, time: Date(timeIntervalSince1970: 1_800_000_000 + seconds), kind: kind, payload: payload)
    }

    @Test("events print as compact lines")
    func eventLines() {
        let f = JobEventFormatter(timeZone: TimeZone(identifier: "UTC")!)
        #expect(f.line(Self.event(1, .state, ["from": nil, "to": "queued", "reason": "submitted"])) == "2027-01-15 08:00:00  state: queued (submitted)")
        #expect(JobEventFormatter.message(Self.event(2, .state, ["from": "queued", "to": "running"])) == "state: queued → running")
        #expect(JobEventFormatter.message(Self.event(3, .progress, [
            "step": 10, "total_steps": 250, "loss": 0.123456, "learning_rate": 1e-5, "step_seconds": 2.314,
        ])) == "step 10/250  loss 0.1235  lr 1.00e-05  2.31 s/step")
        #expect(JobEventFormatter.message(Self.event(4, .progress, ["step": 11, "total_steps": 250, "loss": "nan"])) == "step 11/250  loss nan")
        #expect(JobEventFormatter.message(Self.event(5, .checkpoint, ["step": 30, "path": "checkpoints/step-000030"]))
            == "checkpoint at step 30: checkpoints/step-000030")
        #expect(JobEventFormatter.message(Self.event(6, .error, ["message": "out of memory"])) == "error: out of memory")
        #expect(JobEventFormatter.message(Self.event(7, .log, ["message": "hello", "level": "info"])) == "hello")
        #expect(JobEventFormatter.message(Self.event(8, .log, ["message": "slow", "level": "warning"])) == "[warning] slow")
        #expect(JobEventFormatter.message(Self.event(9, .loss, ["validation": 0.25, "step": 30])) == "loss: step=30 validation=0.25")
    }

    @Test("the progress bar shows step, percent, loss and an ETA from step_seconds or event times")
    func progressBar() {
        var bar = ProgressBar()
        #expect(bar.render(barWidth: 10) == "step 0/0  [----------]    0%")
        bar.update(Self.event(1, .state, ["to": "running"]))
        bar.update(Self.event(2, .progress, ["step": 25, "total_steps": 100, "loss": 0.5, "step_seconds": 2.0]))
        #expect(bar.eta == 150)
        #expect(bar.render(barWidth: 8) == "step 25/100  [##------]   25%  loss 0.5000  ETA 2m30s")
        #expect(bar.render(barWidth: 0) == "step 25/100   25%  loss 0.5000  ETA 2m30s")

        var timed = ProgressBar()
        timed.update(Self.event(1, .progress, ["step": 10, "total_steps": 20, "loss": nil], at: 0))
        #expect(timed.eta == nil)
        timed.update(Self.event(2, .progress, ["step": 15, "total_steps": 20, "loss": 0.1], at: 20))
        #expect(timed.eta == 20)
        #expect(ProgressBar.duration(45) == "45s" && ProgressBar.duration(3725) == "1h02m" && ProgressBar.duration(61) == "1m01s")
    }

    @Test("sample requests travel as snake_case JSON and round-trip")
    func sampleRequestJSON() throws {
        let r = SampleRequest(prompt: "photo of a <new1> toy", negativePrompt: "blurry", step: 30, strength: 0.8, steps: 20,
                              guidance: 6, scheduler: "ddim", seed: 7, width: 64, height: 64, count: 2)
        let data = try APICoding.encoder().encode(r)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(object["negative_prompt"] as? String == "blurry")
        #expect(Set(object.keys) == ["prompt", "negative_prompt", "step", "strength", "steps", "guidance", "scheduler", "seed", "width", "height", "count"])
        #expect(try APICoding.decoder().decode(SampleRequest.self, from: data) == r)
    }
}
