import CDDaemon
import CDDistributed
import CDModels
import CDProtocol
import CDServer
import CDTensor
import CDTestSupport
import CDTraining
import Foundation
import Testing

/// The daemon loop of `cdtrainerd serve` in this process, as a world of one: jobs submitted to the
/// store run to their outputs; a stop checkpoints and the next start resumes to the same weights
/// as an uninterrupted run; cancel and a job's own failure end that job only; admission rules.
@Suite(.serialized) struct DaemonTests {
    /// Runs a `Daemon` on its own thread over the state directory at `root`.
    final class Running: @unchecked Sendable {
        let state: StateDirectory
        let signals = StopSignals([])
        private let done = DispatchSemaphore(value: 0)
        private(set) var error: (any Error)?
        private(set) var lines: [String] = []
        private let lock = NSLock()

        init(root: String, config: DaemonConfig) throws {
            state = try StateDirectory(path: root)
            let daemon = Daemon(world: SingleProcessCommunicator(), config: config, state: state, signals: signals,
                                metrics: DaemonMetrics(worldSize: 1)) { [lock] line in lock.withLock { self.lines.append(line) } }
            let thread = Thread { [self] in
                do { try daemon.run() } catch { self.error = error }
                done.signal()
            }
            thread.stackSize = 16 << 20
            thread.start()
        }

        /// Stops the daemon (as a signal would) and closes the state directory.
        func stop() throws {
            signals.trigger(SIGUSR1)
            guard done.wait(timeout: .now() + 120) == .success else { throw TimedOut(what: "daemon stop") }
            try state.close()
            if let error { throw error }
        }
    }

    struct TimedOut: Error { var what: String }

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func temporaryFolder() throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("cd-daemon-\(UUID())")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url.path
    }

    var config: DaemonConfig {
        var c = DaemonConfig()
        c.models = ["tiny": Fixtures.model.path]
        return c
    }

    /// The demo job at the fixture's resolution, `steps` long, without validation images.
    func spec(steps: Int, checkpointEvery: Int) throws -> JobSpec {
        var spec = try JobSpec.load(path: Self.root.appendingPathComponent("configs/jobs/demo.toml").path)
        let pipeline = try StableDiffusionPipeline.load(Fixtures.model.path)
        spec.model = "tiny"
        spec.resolution = pipeline.vaeScaleFactor * (pipeline.models.unet.config.sampleSize ?? 8)
        spec.steps = steps
        spec.checkpointEvery = checkpointEvery
        spec.concepts[0].numClassImages = 2
        spec.validation = nil
        return spec
    }

    /// What `cdctl submit` does, against the store: upload, admission, submit.
    @discardableResult
    func submit(_ spec: JobSpec, to state: StateDirectory, config: DaemonConfig) throws -> Job {
        let (planned, files) = try JobUpload.plan(spec)
        var blobs: [String: String] = [:]
        for f in files { blobs[f.name] = try state.blobs.put(fileAt: f.path) }
        var admitted = planned
        try JobAdmission(config: config).admit(&admitted, blobNames: Set(blobs.keys))
        try admitted.validate()
        return try state.jobs.submit(spec: admitted, blobs: blobs, submissionID: nil).job
    }

    func wait(for id: String, in state: StateDirectory, timeout: Double = 300, until done: (Job) -> Bool) throws -> Job {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while Date() < deadline {
            let job = try state.jobs.job(id)
            if done(job) { return job }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw TimedOut(what: "job \(id)")
    }

    func bundle(of id: String, in root: String, name: String) throws -> [String: [Float]] {
        try tensors(root + "/jobs/\(id)/run/\(name).concept.safetensors")
    }

    @Test func aSubmittedJobRunsToItsOutputsAndEqualsAnInProcessRun() throws {
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let spec = try spec(steps: 4, checkpointEvery: 2)
        let daemon = try Running(root: root, config: config)
        let job = try submit(spec, to: daemon.state, config: config)
        let done = try wait(for: job.id, in: daemon.state) { $0.state.isTerminal }
        #expect(done.state == .succeeded, "\(done.error ?? "")")
        #expect(done.step == 4 && done.lastCheckpointStep == 4)
        let events = try daemon.state.jobs.events(job.id)
        #expect(events.filter { $0.kind == .progress }.count == 4)
        #expect(events.filter { $0.kind == .checkpoint }.count == 2)
        try daemon.stop()

        // The same job through `JobRunner` directly (the files from where they are).
        let out = try temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: out) }
        var direct = spec
        direct.model = Fixtures.model.path
        try JobRunner(spec: direct, outputDirectory: URL(fileURLWithPath: out)) { _ in }.run()
        let a = try bundle(of: job.id, in: root, name: spec.name)
        let b = try tensors(out + "/\(spec.name).concept.safetensors")
        #expect(a.keys.sorted() == b.keys.sorted())
        for (k, v) in a { #expect(v == b[k], "\(k) differs between the daemon and an in-process run") }
    }

    @Test func aStopCheckpointsAndTheNextStartResumesToTheSameWeights() throws {
        let root = try temporaryFolder(), reference = try temporaryFolder()
        defer {
            try? FileManager.default.removeItem(atPath: root)
            try? FileManager.default.removeItem(atPath: reference)
        }
        let spec = try spec(steps: 8, checkpointEvery: 5)
        // Uninterrupted.
        let whole = try Running(root: reference, config: config)
        let uninterrupted = try submit(spec, to: whole.state, config: config)
        #expect(try wait(for: uninterrupted.id, in: whole.state) { $0.state.isTerminal }.state == .succeeded)
        try whole.stop()

        // Stopped after its second step (no checkpoint there yet), restarted.
        var daemon = try Running(root: root, config: config)
        let job = try submit(spec, to: daemon.state, config: config)
        _ = try wait(for: job.id, in: daemon.state) { $0.step >= 2 }
        try daemon.stop()
        var state = try StateDirectory(path: root)
        let stopped = try state.jobs.job(job.id)
        #expect(stopped.state == .interrupted)
        #expect(stopped.lastCheckpointStep == stopped.step, "a graceful stop must checkpoint its last completed step")
        try state.close()

        daemon = try Running(root: root, config: config)
        let done = try wait(for: job.id, in: daemon.state) { $0.state.isTerminal }
        #expect(done.state == .succeeded, "\(done.error ?? "")")
        let kinds = try daemon.state.jobs.events(job.id).map(\.kind)
        #expect(kinds.filter { $0 == .progress }.count >= 8)
        try daemon.stop()
        state = try StateDirectory(path: root)
        defer { try? state.close() }
        #expect(try state.jobs.job(job.id).state == .succeeded, "a restart keeps the job")

        let a = try bundle(of: job.id, in: root, name: spec.name), b = try bundle(of: uninterrupted.id, in: reference, name: spec.name)
        for (k, v) in a { #expect(v == b[k], "\(k) differs between the resumed and the uninterrupted run") }
    }

    @Test func cancelAndAFailingJobEndOnlyThatJob() throws {
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let daemon = try Running(root: root, config: config)
        let long = try submit(try spec(steps: 500, checkpointEvery: 500), to: daemon.state, config: config)

        // A job whose "image" is not one: it fails when its images are read.
        var broken = try spec(steps: 2, checkpointEvery: 2)
        let junk = try temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: junk) }
        try Data("not an image".utf8).write(to: URL(fileURLWithPath: junk + "/broken.png"))
        broken.concepts[0].instanceImages = [junk + "/broken.png"]
        let failing = try submit(broken, to: daemon.state, config: config)
        let good = try submit(try spec(steps: 2, checkpointEvery: 2), to: daemon.state, config: config)

        _ = try wait(for: long.id, in: daemon.state) { $0.step >= 1 }
        #expect(try daemon.state.jobs.cancel(long.id).outcome == .requested)
        #expect(try wait(for: long.id, in: daemon.state) { $0.state.isTerminal }.state == .cancelled)
        let failed = try wait(for: failing.id, in: daemon.state) { $0.state.isTerminal }
        #expect(failed.state == .failed)
        #expect(failed.error?.contains("c0-0000-broken.png") == true, "the error names the file: \(failed.error ?? "")")
        #expect(try wait(for: good.id, in: daemon.state) { $0.state.isTerminal }.state == .succeeded)
        try daemon.stop()
    }

    @Test func finishedJobsMergeIntoOneConceptWithRenamedTokens() async throws {
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let daemon = try Running(root: root, config: config)
        let first = try spec(steps: 2, checkpointEvery: 2)
        var second = first
        second.seed = 1234
        second.name = "demo-toy-2"
        let a = try submit(first, to: daemon.state, config: config), b = try submit(second, to: daemon.state, config: config)
        for id in [a.id, b.id] { #expect(try wait(for: id, in: daemon.state) { $0.state.isTerminal }.state == .succeeded) }
        var jobs: [(job: Job, folder: String)] = []
        for id in [a.id, b.id] { jobs.append((try daemon.state.jobs.job(id), try daemon.state.jobDirectory(id))) }
        try daemon.stop()

        let bytes = try await CheckpointSampler(config: config).merge(jobs: jobs, request: MergeRequest(jobs: [a.id, b.id]))
        let file = URL(fileURLWithPath: root + "/merged.concept.safetensors")
        try Data(bytes).write(to: file)
        let merged = try ConceptFile.load(file.path)
        #expect(merged.tokens.map(\.name) == ["<new1>", "<new2>"], "both jobs taught <toy1>; the merge renames them by position")
        let settings = try #require(merged.metadata["settings"])
        let object = try JSONSerialization.jsonObject(with: Data(settings.utf8)) as? [String: Any]
        let categories = (object?["merge"] as? [String: Any])?["categories"] as? [String]
        #expect(categories == ["toy", "toy"], "the jobs' class prompts are the categories: \(settings)")

        // A job without its final bundle is refused naming it.
        await #expect(throws: JobFileError.self) {
            _ = try await CheckpointSampler(config: config).merge(jobs: [(jobs[0].job, root + "/nowhere")], request: MergeRequest(jobs: [a.id]))
        }
    }

    @Test func admissionRefusesUnknownModelsTooManyStepsAndMissingImages() throws {
        var c = config
        c.maxSteps = 100
        let admission = JobAdmission(config: c)
        var spec = try spec(steps: 4, checkpointEvery: 2)
        let (planned, files) = try JobUpload.plan(spec)
        let names = Set(files.map(\.name))
        var ok = planned
        try admission.admit(&ok, blobNames: names)
        #expect(ok.outputs == OutputFormat.allCases)

        func problems(_ s: JobSpec, _ n: Set<String>) -> [String] {
            var s = s
            do {
                try admission.admit(&s, blobNames: n)
                return []
            } catch let e as JobFileError {
                return e.problems.map { "\($0.field): \($0.message)" }
            } catch {
                return ["\(error)"]
            }
        }
        spec = planned
        spec.model = "sd99"
        #expect(problems(spec, names).contains { $0.hasPrefix("model:") && $0.contains("sd99") && $0.contains("tiny") })
        spec = planned
        spec.model = Fixtures.model.path + "/"
        #expect(problems(spec, names).isEmpty, "a model's path is as good as its name")
        try admission.admit(&spec, blobNames: names)
        #expect(spec.model == "tiny", "stored by its [models] name")
        spec = planned
        spec.steps = 101
        #expect(problems(spec, names).contains { $0.hasPrefix("steps:") })
        spec = planned
        #expect(problems(spec, names.subtracting([files[0].name])).contains { $0.hasPrefix("concept[0].instance_images[0]:") })
        #expect(problems(planned, names.union(["../x.png"])).contains { $0.hasPrefix("blobs:") })
    }

    @Test func anIdleDaemonUsesAlmostNoCPU() throws {
        let root = try temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let daemon = try Running(root: root, config: config)
        Thread.sleep(forTimeInterval: 0.5)
        let start = Self.cpuSeconds(), wall = Date()
        Thread.sleep(forTimeInterval: 3)
        let share = (Self.cpuSeconds() - start) / Date().timeIntervalSince(wall)
        try daemon.stop()
        #expect(share < 0.05, "idle daemon used \(share * 100)% of a core")
    }

    /// User + system CPU time of this process.
    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }
}
