import CDClient
import CDProtocol
import CDServer
import CDTestSupport
import Foundation
import Testing

@Suite("APIClient against a live APIServer")
struct APIClientTests {
    @Test("uploads send only content the daemon lacks (HEAD first); equal files go once")
    func uploadDedup() async throws {
        try await withClient { dir, state, client in
            let files = [
                JobUpload.File(name: "c0-0000-a.png", path: FixtureImages.pngA),
                JobUpload.File(name: "c0-0001-b.png", path: FixtureImages.pngB),
                JobUpload.File(name: "c0-0002-a-again.png", path: FixtureImages.pngA),
            ]
            let shaA = APIClient.sha256(try Data(contentsOf: URL(fileURLWithPath: FixtureImages.pngA)))
            #expect(try await client.blobExists(shaA) == false)
            let sent = Counter()
            let first = try await client.upload(files) { p in if p.sent { sent.increment() } }
            #expect(first.uploaded == ["c0-0000-a.png", "c0-0001-b.png"])
            #expect(first.alreadyStored == ["c0-0002-a-again.png"])
            #expect(sent.value == 2)
            #expect(first.blobs["c0-0000-a.png"] == shaA && first.blobs["c0-0002-a-again.png"] == shaA)
            #expect(try await client.blobExists(shaA))
            #expect(try state.blobs.data(shaA) == Data(contentsOf: URL(fileURLWithPath: FixtureImages.pngA)))

            let second = try await client.upload(files)
            #expect(second.uploaded.isEmpty)
            #expect(second.alreadyStored.count == 3 && second.bytesUploaded == 0)
            #expect(second.blobs == first.blobs)

            let missing = JobUpload.File(name: "c0-0000-x.png", path: dir + "/nothere.png")
            await #expect(throws: ClientFileError.self) { try await client.upload([missing]) }
        }
    }

    @Test("a job file is submitted with its images; the same submission id returns the same job (200)")
    func submitJobFile() async throws {
        try await withClient { dir, state, client in
            let spec = try JobSpec.load(path: try writeJobFolder(in: dir))
            let submission = try JobSubmission(spec: spec, submissionID: "sub-42")
            #expect(submission.files.map(\.name) == [
                "c0-0000-a.png", "c0-0001-b.png", "c0-0002-c-same-as-a.png", "c0-class-0000-toy0.jpg", "c0-class-0000-toy0.txt",
            ])
            let (result, uploads) = try await submission.submit(with: client)
            #expect(result.created)
            #expect(uploads.uploaded.count == 4 && uploads.alreadyStored == ["c0-0002-c-same-as-a.png"])
            let job = result.job
            #expect(job.state == .queued && job.submissionID == "sub-42" && job.totalSteps == 10)
            #expect(job.spec.concepts[0].instanceImages == ["c0-0000-a.png", "c0-0001-b.png", "c0-0002-c-same-as-a.png"])
            #expect(job.spec.concepts[0].classImages == JobUpload.classFolder(0))
            #expect(try state.jobs.jobBlobs(job.id) == uploads.blobs)

            let again = try await submission.submit(with: client)
            #expect(!again.result.created)
            #expect(again.result.job.id == job.id)
            #expect(again.uploads.uploaded.isEmpty)
            #expect(try state.jobs.list().count == 1)

            let other = try await JobSubmission(spec: spec).submit(with: client)
            #expect(other.result.created && other.result.job.id != job.id)
        }
    }

    @Test("list filters by state, status reads one job, unknown ids are 404 and malformed ones never sent")
    func listAndStatus() async throws {
        try await withClient { _, state, client in
            let a = try makeJob(state.jobs, in: .queued, name: "a")
            let b = try makeJob(state.jobs, in: .running, name: "b")
            try makeJob(state.jobs, in: .succeeded, name: "c")
            #expect(try await client.jobs().map(\.name) == ["c", "b", "a"])
            #expect(try await client.jobs(states: [.queued, .running]).map(\.id) == [b.id, a.id])
            #expect(try await client.jobs(limit: 1).map(\.name) == ["c"])
            let got = try await client.job(b.id)
            #expect(got.id == b.id && got.state == .running)
            // The API sends milliseconds (truncated or rounded, and the seconds since 1970 as a Double keep ~0.2 µs).
            #expect(abs(got.createdAt.timeIntervalSince(b.createdAt)) < 0.0011)

            let e = await #expect(throws: APIClientError.self) { try await client.job("j-aaaaaaaaaaaa") }
            #expect(e?.status == 404)
            #expect(e?.serverMessage?.contains("j-aaaaaaaaaaaa") == true)
            let bad = await #expect(throws: APIClientError.self) { try await client.job("../../metrics") }
            #expect(bad == .invalidRequest("'../../metrics' is not a job id (j- and 12 characters a-z, 2-7; `cdctl ls` lists them)"))
        }
    }

    @Test("cancel: queued → cancelled, running → requested, again → already, finished → 409")
    func cancel() async throws {
        try await withClient { _, state, client in
            let q = try makeJob(state.jobs, in: .queued)
            let r1 = try await client.cancel(q.id)
            #expect(r1.outcome == .cancelled && r1.job.state == .cancelled)
            #expect(try await client.cancel(q.id).outcome == .alreadyCancelled)
            let run = try makeJob(state.jobs, in: .running)
            let r2 = try await client.cancel(run.id)
            #expect(r2.outcome == .requested && r2.job.cancelRequested)
            let done = try makeJob(state.jobs, in: .succeeded)
            let e = await #expect(throws: APIClientError.self) { try await client.cancel(done.id) }
            #expect(e?.status == 409)
            #expect(e?.serverMessage?.contains("succeeded") == true)
        }
    }

    @Test("the events long poll returns as soon as an event arrives; the follower sees every event and the end")
    func eventsAndFollow() async throws {
        try await withClient { _, state, client in
            let job = try makeJob(state.jobs, in: .running)  // events 1, 2
            let jobs = state.jobs
            let writer = Task {
                try await Task.sleep(for: .milliseconds(300))
                try jobs.recordProgress(job.id, step: 1, loss: 0.5, stepSeconds: 1.5)
            }
            let start = ContinuousClock.now
            let events = try await client.events(job.id, after: 2, wait: 20)
            try await writer.value
            #expect(events.map(\.seq) == [3])
            #expect(events[0].kind == .progress && events[0].payload["step"]?.intValue == 1)
            #expect(ContinuousClock.now - start < .seconds(10))
            #expect(try await client.events(job.id, after: 3, wait: 1).isEmpty)

            let player = Task { try await playTraining(jobs, job.id, steps: 6, end: .succeeded, pause: .milliseconds(100)) }
            var seen: [JobEvent] = []
            let final = try await JobFollower(client: client, wait: 5).follow(job.id, after: 1) { seen.append($0) }
            try await player.value
            #expect(final.state == .succeeded)
            #expect(seen.map(\.seq) == Array(2...(seen.count + 1)))
            #expect(seen.filter { $0.kind == .progress }.count == 7)
            #expect(seen.contains { $0.kind == .checkpoint && $0.payload["step"]?.intValue == 3 })
            #expect(seen.last?.kind == .state && seen.last?.payload["to"]?.stringValue == "succeeded")

            // A job that is over already: the follower returns its remaining events at once.
            let failed = try makeJob(state.jobs, in: .failed)
            var tail: [JobEventKind] = []
            let end = try await JobFollower(client: client, wait: 30).follow(failed.id) { tail.append($0.kind) }
            #expect(end.state == .failed && end.error == "the loss is NaN")
            #expect(tail == [.state, .state, .error, .state])
        }
    }

    @Test("checkpoints are listed and downloaded by format into the folder, atomically, newest by default")
    func checkpointDownload() async throws {
        try await withClient { dir, state, client in
            let job = try jobWithCheckpoints(state)
            #expect(try await client.checkpoints(job.id).map(\.step) == [5, 10])
            #expect(try await client.checkpointFiles(job.id, step: 10).map(\.path) == CheckpointFixture.files.sorted())

            let out = dir + "/out"
            let all = try await client.downloadCheckpoint(job.id, format: .all, into: out)
            #expect(all.step == 10)
            #expect(allFiles(out) == CheckpointFixture.files.filter { $0 != "state.safetensors" }.sorted())
            for f in allFiles(out) {
                #expect(try String(contentsOfFile: out + "/" + f, encoding: .utf8) == CheckpointFixture.content(step: 10, file: f))
            }
            #expect(all.files.map(\.localPath) == all.files.map { out + "/" + $0.file.path })

            let five = dir + "/five"
            let bundle = try await client.downloadCheckpoint(job.id, step: 5, format: .bundle, withState: true, into: five)
            #expect(bundle.step == 5)
            #expect(allFiles(five) == ["state.safetensors", "toy.concept.safetensors"])
            #expect(try String(contentsOfFile: five + "/toy.concept.safetensors", encoding: .utf8) == CheckpointFixture.content(step: 5, file: "toy.concept.safetensors"))

            // A second download replaces the files and leaves no temporary files behind.
            try Data("old".utf8).write(to: URL(fileURLWithPath: out + "/diffusers/<new1>.safetensors"))
            _ = try await client.downloadCheckpoint(job.id, format: .diffusers, into: out)
            #expect(try String(contentsOfFile: out + "/diffusers/<new1>.safetensors", encoding: .utf8)
                == CheckpointFixture.content(step: 10, file: "diffusers/<new1>.safetensors"))
            #expect(try FileManager.default.contentsOfDirectory(atPath: out + "/diffusers").sorted()
                == ["<new1>.safetensors", "pytorch_custom_diffusion_weights.safetensors"])

            await #expect(throws: CheckpointNotFound.noSuchStep(jobID: job.id, step: 7, available: [5, 10])) {
                try await client.downloadCheckpoint(job.id, step: 7, format: .all, into: out)
            }
            let empty = try makeJob(state.jobs, in: .running)
            await #expect(throws: CheckpointNotFound.noCheckpoints(jobID: empty.id)) {
                try await client.downloadCheckpoint(empty.id, format: .all, into: out)
            }
            let e = await #expect(throws: APIClientError.self) {
                try await client.downloadCheckpointFile(job.id, step: 10, file: CheckpointFile(path: "nothere.bin", size: 1), into: out)
            }
            #expect(e?.status == 404)
            #expect(!FileManager.default.fileExists(atPath: out + "/nothere.bin"))
        }
    }

    @Test("without or with a wrong token: 401 with advice; health needs no token")
    func authRefused() async throws {
        try await withClient { _, _, client in
            for token in [nil, "wrong-token-0123456789abcdef"] {
                let anonymous = APIClient(server: client.server, token: token, retry: .none)
                let e = await #expect(throws: APIClientError.self) { try await anonymous.jobs() }
                #expect(e?.status == 401)
                #expect(e?.description.contains("set CDCTL_TOKEN or --token") == true)
                #expect(e?.description.contains("/etc/cdtrainerd/token") == true)
                let health = try await anonymous.health()
                #expect(health.status == "ok")
            }
        }
    }

    @Test("an invalid spec is refused with 422 and every problem with its field")
    func invalidSpec() async throws {
        try await withClient { _, state, client in
            var spec = sampleSpec()
            spec.steps = 0
            spec.resolution = 100
            let e = await #expect(throws: APIClientError.self) { try await client.submit(SubmitJobRequest(spec: spec)) }
            #expect(e?.status == 422)
            #expect(e?.missingBlobs.isEmpty == true)
            let fields = e?.problems.map(\.field) ?? []
            #expect(fields.contains("steps") && fields.contains("resolution"))
            let text = e?.description ?? ""
            for p in e?.problems ?? [] { #expect(text.contains("\n  " + p.field + ": ")) }

            let missing = String(repeating: "ab", count: 32)
            let m = await #expect(throws: APIClientError.self) {
                try await client.submit(SubmitJobRequest(spec: sampleSpec(), blobs: ["c0-0000-x.png": missing]))
            }
            #expect(m?.status == 422)
            #expect(m?.missingBlobs == [.init(fileName: "c0-0000-x.png", sha256: missing)])
            let stored = try state.jobs.list()
            #expect(stored.isEmpty)
        }
    }

    @Test("a call made while the daemon is down succeeds once it starts")
    func retryUntilServerStarts() async throws {
        try await withTemporaryDirectory { dir in
            try await withState(in: dir) { state in
                let port = try freePort()
                let notices = Counter()
                let client = APIClient(
                    server: URL(string: "http://127.0.0.1:\(port)")!, token: apiToken,
                    retry: RetryPolicy(initialDelay: 0.2, maxDelay: 1, budget: 30)) { _ in notices.increment() }
                try makeJob(state.jobs, in: .queued, name: "early")
                let call = Task { try await client.jobs() }
                try await Task.sleep(for: .seconds(1))
                let names = try await withLiveServer(state, port: port) { _ in try await call.value.map(\.name) }
                #expect(names == ["early"])
                #expect(notices.value >= 2)
            }
        }
    }

    @Test("with nothing listening the client gives up after its budget with `unreachable`")
    func unreachable() async throws {
        let port = try freePort()
        let client = APIClient(server: URL(string: "http://127.0.0.1:\(port)")!, token: apiToken,
                               retry: RetryPolicy(initialDelay: 0.1, maxDelay: 0.2, budget: 1))
        let start = ContinuousClock.now
        let e = await #expect(throws: APIClientError.self) { try await client.jobs() }
        let took = ContinuousClock.now - start
        guard case let .unreachable(server, _, retried)? = e else {
            Issue.record("expected unreachable, got \(String(describing: e))")
            return
        }
        #expect(server.contains("\(port)"))
        #expect(retried >= 0.9 && took < .seconds(10))
        #expect(e?.description.contains("--server") == true)
        let once = APIClient(server: URL(string: "http://127.0.0.1:\(port)")!, token: nil, retry: .none)
        let quick = await #expect(throws: APIClientError.self) { try await once.health() }
        if case let .unreachable(_, _, retried)? = quick {
            #expect(retried == 0)
        } else {
            Issue.record("expected unreachable, got \(String(describing: quick))")
        }
    }
}
