import CDProtocol
import CDTestSupport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Hummingbird
import HummingbirdTesting
import Testing
@testable import CDServer

let apiToken = "test-token-0123456789abcdef"

/// An API application on a fresh state directory (router tests: no socket).
func withAPI<T>(
    maxBlobSize: Int = BlobStore.defaultMaxBlobSize, config: ServerConfig? = nil,
    _ body: @escaping @Sendable (StateDirectory, any TestClientProtocol) async throws -> T
) async throws -> T {
    try await withStateDirectory(maxBlobSize: maxBlobSize) { state in
        let cfg = config ?? ServerConfig(port: 0, token: apiToken)
        let app = try APIServer.application(state: state, config: cfg)
        return try await app.test(.router) { client in try await body(state, client) }
    }
}

func auth(_ token: String = apiToken, _ extra: HTTPFields = [:]) -> HTTPFields {
    var h = extra
    h[.authorization] = "Bearer \(token)"
    return h
}

func decode<T: Decodable>(_ type: T.Type, _ response: TestResponse) throws -> T {
    try APICoding.decoder().decode(T.self, from: Data(response.body.readableBytesView))
}

func errorMessage(_ response: TestResponse) throws -> String {
    try decode(APIErrorResponse.self, response).error
}

func submitBody(_ spec: JobSpec = sampleSpec(), blobs: [String: String] = [:], submissionID: String? = nil) throws -> ByteBuffer {
    ByteBuffer(bytes: try APICoding.encoder().encode(SubmitJobRequest(spec: spec, blobs: blobs, submissionID: submissionID)))
}

/// Everything a request could change: jobs, their events and blob references, and the blob files.
struct StoreSnapshot: Equatable {
    var jobs: [Job]
    var events: [[JobEvent]]
    var blobRefs: [[String: String]]
    var blobFiles: [String]

    init(_ state: StateDirectory) throws {
        jobs = try state.jobs.list(limit: 10_000)
        events = try jobs.map { try state.jobs.events($0.id) }
        blobRefs = try jobs.map { try state.jobs.jobBlobs($0.id) }
        blobFiles = allFiles(state.blobs.directory)
    }
}

@Suite("API")
struct APITests {
    // MARK: Config and auth

    @Test("ServerConfig refuses a non-loopback address without a token and hides the token")
    func configValidation() throws {
        try ServerConfig().validate()
        try ServerConfig(host: "127.0.0.1", token: nil).validate()
        #expect(throws: ServerConfigError.self) { try ServerConfig(host: "0.0.0.0", token: nil).validate() }
        #expect(throws: ServerConfigError.self) { try ServerConfig(host: "10.1.2.3", token: nil).validate() }
        #expect(throws: ServerConfigError.self) { try ServerConfig(token: "short").validate() }
        try ServerConfig(host: "0.0.0.0", token: apiToken).validate()
        #expect(!ServerConfig(token: apiToken).description.contains(apiToken))
        #expect(ServerConfig.isLoopback("127.0.0.1") && ServerConfig.isLoopback("::1") && !ServerConfig.isLoopback("192.168.1.1"))
    }

    @Test("calls without or with a wrong token get 401 and change nothing; health needs none")
    func authRequired() async throws {
        try await withAPI { state, client in
            _ = try state.blobs.put(data: Data("x".utf8))
            let before = try StoreSnapshot(state)
            let wrong = auth("wrong-token-0123456789abcdef")
            for headers in [HTTPFields(), wrong, [.authorization: "Basic abc"], [.authorization: "Bearer"]] {
                try await client.execute(uri: "/v1/jobs", method: .post, headers: headers, body: try submitBody()) { (r: TestResponse) async throws in
                    #expect(r.status == .unauthorized)
                    #expect(try errorMessage(r).contains("token"))
                    #expect(!String(buffer: r.body).contains(apiToken))
                }
                try await client.execute(uri: "/v1/blobs", method: .post, headers: headers, body: ByteBuffer(string: "new")) { (r: TestResponse) async throws in
                    #expect(r.status == .unauthorized)
                }
                try await client.execute(uri: "/v1/jobs", method: .get, headers: headers) { #expect($0.status == .unauthorized) }
                try await client.execute(uri: "/metrics", method: .get, headers: headers) { #expect($0.status == .unauthorized) }
            }
            #expect(try StoreSnapshot(state) == before)
            try await client.execute(uri: "/v1/health", method: .get) { (r: TestResponse) async throws in
                #expect(r.status == .ok)
                #expect(try decode(HealthResponse.self, r).status == "ok")
            }
            try await client.execute(uri: "/v1/jobs", method: .get, headers: auth()) { #expect($0.status == .ok) }
        }
    }

    // MARK: Blobs

    @Test("blob upload returns hash and size; HEAD tells whether a blob exists")
    func blobs() async throws {
        try await withAPI { state, client in
            let data = Data((0..<100_000).map { UInt8($0 % 251) })
            let up = try await client.execute(uri: "/v1/blobs", method: .post, headers: auth(), body: ByteBuffer(bytes: data)) { (r: TestResponse) async throws in
                #expect(r.status == .created)
                return try decode(BlobUploadResponse.self, r)
            }
            #expect(up.size == data.count)
            #expect(try state.blobs.data(up.sha256) == data)
            try await client.execute(uri: APIPaths.blob(up.sha256), method: .head, headers: auth()) { #expect($0.status == .ok) }
            try await client.execute(uri: APIPaths.blob(String(repeating: "0", count: 64)), method: .head, headers: auth()) {
                #expect($0.status == .notFound)
            }
            try await client.execute(uri: APIPaths.blob("nothex"), method: .head, headers: auth()) { #expect($0.status == .badRequest) }
        }
    }

    @Test("an oversized upload gets 413 and stores nothing")
    func oversizedBlob() async throws {
        try await withAPI(maxBlobSize: 1000) { state, client in
            let before = try StoreSnapshot(state)
            try await client.execute(uri: "/v1/blobs", method: .post, headers: auth(), body: ByteBuffer(repeating: 7, count: 1001)) { (r: TestResponse) async throws in
                #expect(r.status == .contentTooLarge)
                #expect(try errorMessage(r).contains("1000"))
            }
            #expect(try StoreSnapshot(state) == before)
            #expect(entries(state.temporaryDirectory).isEmpty)
            try await client.execute(uri: "/v1/blobs", method: .post, headers: auth(), body: ByteBuffer(repeating: 7, count: 1000)) {
                #expect($0.status == .created)
            }
        }
    }

    // MARK: Jobs

    @Test("submit creates a queued job; the same submission id returns it again with 200")
    func submitIdempotent() async throws {
        try await withAPI { state, client in
            let sha = try state.blobs.put(data: Data("img".utf8))
            let body = try submitBody(blobs: ["a.jpg": sha], submissionID: "sub-1")
            let job = try await client.execute(uri: "/v1/jobs", method: .post, headers: auth(), body: body) { (r: TestResponse) async throws in
                #expect(r.status == .created)
                return try decode(Job.self, r)
            }
            #expect(job.state == .queued)
            #expect(job.spec == sampleSpec())
            #expect(try state.jobs.jobBlobs(job.id) == ["a.jpg": sha])
            let again = try await client.execute(uri: "/v1/jobs", method: .post, headers: auth(), body: body) { (r: TestResponse) async throws in
                #expect(r.status == .ok)
                return try decode(Job.self, r)
            }
            #expect(again.id == job.id)
            #expect(try state.jobs.list().count == 1)
            let got = try await client.execute(uri: APIPaths.job(job.id), method: .get, headers: auth()) { (r: TestResponse) async throws in
                #expect(r.status == .ok)
                return try decode(Job.self, r)
            }
            #expect(got.id == job.id && got.createdAt == job.createdAt)
        }
    }

    @Test("bad JSON → 400, invalid spec → 422 with problems, unknown blobs → 422 naming them; nothing stored")
    func badSubmissions() async throws {
        try await withAPI { state, client in
            _ = try makeJob(state.jobs, in: .queued)
            let before = try StoreSnapshot(state)
            for text in ["{", "[]", "{\"blobs\": {}}", "{\"spec\": 3}"] {
                try await client.execute(uri: "/v1/jobs", method: .post, headers: auth(), body: ByteBuffer(string: text)) { (r: TestResponse) async throws in
                    #expect(r.status == .badRequest, "\(text)")
                    #expect(try errorMessage(r).hasPrefix("bad JSON"))
                }
            }
            var invalid = sampleSpec()
            invalid.steps = 0
            invalid.resolution = 100
            try await client.execute(uri: "/v1/jobs", method: .post, headers: auth(), body: try submitBody(invalid)) { (r: TestResponse) async throws in
                #expect(r.status == .unprocessableContent)
                let e = try decode(APIErrorResponse.self, r)
                #expect(e.problems?.map(\.field).contains("steps") == true)
                #expect(e.problems?.map(\.field).contains("resolution") == true)
            }
            let missing = String(repeating: "ab", count: 32)
            try await client.execute(
                uri: "/v1/jobs", method: .post, headers: auth(), body: try submitBody(blobs: ["x.png": missing], submissionID: "s")
            ) { (r: TestResponse) async throws in
                #expect(r.status == .unprocessableContent)
                let e = try decode(APIErrorResponse.self, r)
                #expect(e.missingBlobs == [.init(fileName: "x.png", sha256: missing)])
                #expect(e.error.contains("x.png"))
            }
            try await client.execute(
                uri: "/v1/jobs", method: .post, headers: auth(), body: try submitBody(blobs: ["../x.png": missing])
            ) { #expect($0.status == .badRequest) }
            let big = ByteBuffer(repeating: UInt8(ascii: " "), count: (1 << 20) + 1)
            try await client.execute(uri: "/v1/jobs", method: .post, headers: auth(), body: big) { #expect($0.status == .contentTooLarge) }
            #expect(try StoreSnapshot(state) == before)
        }
    }

    @Test("list filters by state and limit; unknown and malformed ids are 404")
    func listAndGet() async throws {
        try await withAPI { state, client in
            let a = try makeJob(state.jobs, in: .queued, name: "a")
            let b = try makeJob(state.jobs, in: .running, name: "b")
            _ = try makeJob(state.jobs, in: .succeeded, name: "c")
            struct List: Decodable { var jobs: [Job] }
            try await client.execute(uri: "/v1/jobs", method: .get, headers: auth()) { (r: TestResponse) async throws in
                #expect(try decode(List.self, r).jobs.map(\.name) == ["c", "b", "a"])
            }
            try await client.execute(uri: APIPaths.jobs(states: ["queued", "running"]), method: .get, headers: auth()) { (r: TestResponse) async throws in
                #expect(try decode(List.self, r).jobs.map(\.id) == [b.id, a.id])
            }
            try await client.execute(uri: "/v1/jobs?limit=1", method: .get, headers: auth()) { (r: TestResponse) async throws in
                #expect(try decode(List.self, r).jobs.map(\.name) == ["c"])
            }
            try await client.execute(uri: "/v1/jobs?state=bogus", method: .get, headers: auth()) { #expect($0.status == .badRequest) }
            try await client.execute(uri: "/v1/jobs?limit=0", method: .get, headers: auth()) { #expect($0.status == .badRequest) }
            for id in ["j-aaaaaaaaaaaa", "nope", "j-AAAAAAAAAAAA", "..%2F..%2Fetc"] {
                try await client.execute(uri: "/v1/jobs/\(id)", method: .get, headers: auth()) { (r: TestResponse) async throws in
                    #expect(r.status == .notFound, "\(id)")
                }
            }
        }
    }

    @Test("cancel: queued → cancelled, running → requested, finished → 409 unchanged")
    func cancel() async throws {
        try await withAPI { state, client in
            struct Answer: Decodable { var job: Job; var outcome: CancelOutcome }
            let q = try makeJob(state.jobs, in: .queued)
            try await client.execute(uri: APIPaths.cancel(q.id), method: .post, headers: auth()) { (r: TestResponse) async throws in
                #expect(r.status == .ok)
                let a = try decode(Answer.self, r)
                #expect(a.outcome == .cancelled && a.job.state == .cancelled)
            }
            let run = try makeJob(state.jobs, in: .running)
            try await client.execute(uri: APIPaths.cancel(run.id), method: .post, headers: auth()) { (r: TestResponse) async throws in
                #expect(try decode(Answer.self, r).outcome == .requested)
            }
            #expect(try state.jobs.cancelRequested(run.id))
            let done = try makeJob(state.jobs, in: .succeeded)
            let before = try StoreSnapshot(state)
            try await client.execute(uri: APIPaths.cancel(done.id), method: .post, headers: auth()) { (r: TestResponse) async throws in
                #expect(r.status == .conflict)
                #expect(try errorMessage(r).contains("succeeded"))
            }
            try await client.execute(uri: APIPaths.cancel("j-aaaaaaaaaaaa"), method: .post, headers: auth()) { #expect($0.status == .notFound) }
            #expect(try StoreSnapshot(state) == before)
        }
    }

    // MARK: Events

    @Test("events page with after/limit; a long poll returns when an event arrives")
    func events() async throws {
        try await withAPI { state, client in
            let job = try makeJob(state.jobs, in: .running)  // events 1 (queued), 2 (running)
            for i in 1...3 { try state.jobs.recordProgress(job.id, step: i, loss: 0.5) }  // 3, 4, 5
            let all = try await client.execute(uri: APIPaths.events(job.id), method: .get, headers: auth()) { (r: TestResponse) async throws in
                try decode([JobEvent].self, r)
            }
            #expect(all.map(\.seq) == [1, 2, 3, 4, 5])
            #expect(all[2].kind == .progress && all[2].payload["step"]?.intValue == 1)
            let page = try await client.execute(uri: APIPaths.events(job.id, after: 2, limit: 2), method: .get, headers: auth()) { (r: TestResponse) async throws in
                try decode([JobEvent].self, r)
            }
            #expect(page.map(\.seq) == [3, 4])
            // Nothing new: a short wait returns [] after it.
            let none = try await client.execute(uri: APIPaths.events(job.id, after: 5, wait: 1), method: .get, headers: auth()) { (r: TestResponse) async throws in
                try decode([JobEvent].self, r)
            }
            #expect(none.isEmpty)
            // An event that arrives during the wait ends it early.
            let jobs = state.jobs
            let writer = Task {
                try await Task.sleep(for: .milliseconds(200))
                try jobs.recordProgress(job.id, step: 4, loss: 0.25)
            }
            let start = ContinuousClock.now
            let late = try await client.execute(uri: APIPaths.events(job.id, after: 5, wait: 20), method: .get, headers: auth()) { (r: TestResponse) async throws in
                try decode([JobEvent].self, r)
            }
            try await writer.value
            #expect(late.map(\.seq) == [6])
            #expect(ContinuousClock.now - start < .seconds(10))
            try await client.execute(uri: APIPaths.events(job.id, after: 0, wait: 100_000), method: .get, headers: auth()) {
                #expect($0.status == .badRequest)
            }
            try await client.execute(uri: APIPaths.events("j-aaaaaaaaaaaa"), method: .get, headers: auth()) { #expect($0.status == .notFound) }
        }
    }

    @Test("server-sent events stream every event and end when the job is finished")
    func serverSentEvents() async throws {
        try await withAPI { state, client in
            let job = try makeJob(state.jobs, in: .running)
            try state.jobs.recordProgress(job.id, step: 1, loss: 0.5)
            try state.jobs.transition(job.id, to: .succeeded)
            try await client.execute(
                uri: APIPaths.events(job.id, after: 1), method: .get, headers: auth(apiToken, [.accept: "text/event-stream"])
            ) { (r: TestResponse) async throws in
                #expect(r.status == .ok)
                #expect(r.headers[.contentType]?.hasPrefix("text/event-stream") == true)
                let text = String(buffer: r.body)
                #expect(text.hasPrefix("id: 2\nevent: state\ndata: {"))
                #expect(text.contains("id: 3\nevent: progress\n"))
                #expect(text.contains("id: 4\nevent: state\n"))
                #expect(!text.contains("id: 1\n"))
            }
        }
    }

    // MARK: Checkpoints

    /// A running job with a checkpoint at step 5 (`checkpoints/step-000005` in its folder) holding
    /// `state.safetensors` and `diffusers/delta.bin`.
    func jobWithCheckpoint(_ state: StateDirectory) throws -> (Job, String) {
        let job = try makeJob(state.jobs, in: .running)
        let dir = try state.createJobDirectory(job.id) + "/checkpoints/step-000005"
        try FileManager.default.createDirectory(atPath: dir + "/diffusers", withIntermediateDirectories: true)
        try Data("weights".utf8).write(to: URL(fileURLWithPath: dir + "/state.safetensors"))
        try Data([0, 1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/diffusers/delta.bin"))
        try state.jobs.recordCheckpoint(job.id, step: 5, path: "checkpoints/step-000005")
        return (job, dir)
    }

    @Test("checkpoints are listed, their files listed and downloaded")
    func checkpointDownload() async throws {
        try await withAPI { state, client in
            let (job, _) = try jobWithCheckpoint(state)
            try await client.execute(uri: APIPaths.checkpoints(job.id), method: .get, headers: auth()) { (r: TestResponse) async throws in
                let list = try decode([CheckpointInfo].self, r)
                #expect(list.map(\.step) == [5] && list[0].path == "checkpoints/step-000005")
            }
            try await client.execute(uri: APIPaths.checkpointFiles(job.id, step: 5), method: .get, headers: auth()) { (r: TestResponse) async throws in
                #expect(try decode([CheckpointFile].self, r) == [
                    .init(path: "diffusers/delta.bin", size: 4), .init(path: "state.safetensors", size: 7),
                ])
            }
            try await client.execute(
                uri: APIPaths.checkpointFile(job.id, step: 5, relativePath: "state.safetensors"), method: .get, headers: auth()
            ) { (r: TestResponse) async throws in
                #expect(r.status == .ok)
                #expect(String(buffer: r.body) == "weights")
            }
            try await client.execute(
                uri: APIPaths.checkpointFile(job.id, step: 5, relativePath: "diffusers/delta.bin"), method: .get, headers: auth()
            ) { (r: TestResponse) async throws in
                #expect(Array(r.body.readableBytesView) == [0, 1, 2, 3])
            }
            try await client.execute(uri: APIPaths.checkpointFiles(job.id, step: 6), method: .get, headers: auth()) {
                #expect($0.status == .notFound)
            }
        }
    }

    @Test("checkpoint file paths with .., encoded separators, absolute parts or symlinks are refused")
    func checkpointPathTricks() async throws {
        try await withAPI { state, client in
            let (job, dir) = try jobWithCheckpoint(state)
            let secret = state.root + "/secret.txt"
            try Data("secret".utf8).write(to: URL(fileURLWithPath: secret))
            try FileManager.default.createSymbolicLink(atPath: dir + "/link.txt", withDestinationPath: secret)
            try FileManager.default.createSymbolicLink(atPath: dir + "/up", withDestinationPath: state.root)
            let base = APIPaths.checkpointFiles(job.id, step: 5)
            for tail in [
                "/../../../secret.txt", "/..%2F..%2F..%2Fsecret.txt", "/%2E%2E/%2E%2E/secret.txt", "/link.txt", "/up/secret.txt",
                "/diffusers/../../step-000005/state.safetensors", "/%2Fetc%2Fpasswd", "/./state.safetensors", "/diffusers",
                "/nothere.bin",
            ] {
                try await client.execute(uri: base + tail, method: .get, headers: auth()) { (r: TestResponse) async throws in
                    #expect(r.status == .badRequest || r.status == .notFound, "\(tail): \(r.status)")
                    #expect(!String(buffer: r.body).contains("secret\""), "\(tail)")
                    #expect(String(buffer: r.body) != "secret")
                }
            }
            // Listing skips the links.
            try await client.execute(uri: base, method: .get, headers: auth()) { (r: TestResponse) async throws in
                #expect(try decode([CheckpointFile].self, r).map(\.path) == ["diffusers/delta.bin", "state.safetensors"])
            }
            // A checkpoint recorded outside the job folder is not served.
            let other = try makeJob(state.jobs, in: .running)
            try state.jobs.recordCheckpoint(other.id, step: 1, path: state.root)
            try await client.execute(uri: APIPaths.checkpointFiles(other.id, step: 1), method: .get, headers: auth()) {
                #expect($0.status == .notFound)
            }
            try await client.execute(uri: APIPaths.checkpointFile(other.id, step: 1, relativePath: "secret.txt"), method: .get, headers: auth()) {
                #expect($0.status == .notFound)
            }
        }
    }

    // MARK: Metrics and live server

    @Test("metrics give jobs by state and total in Prometheus text")
    func metrics() async throws {
        try await withAPI { state, client in
            _ = try makeJob(state.jobs, in: .queued)
            _ = try makeJob(state.jobs, in: .queued)
            _ = try makeJob(state.jobs, in: .running)
            try await client.execute(uri: "/metrics", method: .get, headers: auth()) { (r: TestResponse) async throws in
                #expect(r.status == .ok)
                let text = String(buffer: r.body)
                #expect(text.contains("cdtrainerd_jobs{state=\"queued\"} 2\n"))
                #expect(text.contains("cdtrainerd_jobs{state=\"running\"} 1\n"))
                #expect(text.contains("cdtrainerd_queue_depth 2\n"))
                #expect(text.contains("cdtrainerd_jobs_total 3\n"))
            }
        }
    }

    @Test("a live server on an ephemeral port: upload, submit, get")
    func live() async throws {
        try await withStateDirectory { state in
            let app = try APIServer.application(state: state, config: ServerConfig(port: 0, token: apiToken))
            try await app.test(.live) { client in
                let body = ByteBuffer(repeating: 42, count: 300_000)
                let up = try await client.execute(uri: "/v1/blobs", method: .post, headers: auth(), body: body) { (r: TestResponse) async throws in
                    #expect(r.status == .created)
                    return try decode(BlobUploadResponse.self, r)
                }
                #expect(up.size == 300_000)
                let job = try await client.execute(
                    uri: "/v1/jobs", method: .post, headers: auth(), body: try submitBody(blobs: ["a.png": up.sha256])
                ) { (r: TestResponse) async throws in
                    #expect(r.status == .created)
                    return try decode(Job.self, r)
                }
                try await client.execute(uri: APIPaths.job(job.id), method: .get, headers: auth()) { #expect($0.status == .ok) }
                try await client.execute(uri: APIPaths.job(job.id), method: .get) { #expect($0.status == .unauthorized) }
            }
        }
    }

    @Test("APIServer.application binds port 0 and reports the port through onServerRunning")
    func ephemeralPort() async throws {
        try await withStateDirectory { state in
            let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
            let app = try APIServer.application(state: state, config: ServerConfig(port: 0, token: apiToken), onServerRunning: { channel in
                portSink.yield(channel.localAddress?.port ?? -1)
                portSink.finish()
            })
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await app.runService() }
                var it = ports.makeAsyncIterator()
                let port = try #require(await it.next())
                #expect(port > 0)
                var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/v1/jobs")!)
                let (_, noToken) = try await URLSession.shared.data(for: request)
                #expect((noToken as? HTTPURLResponse)?.statusCode == 401)
                request.setValue("Bearer \(apiToken)", forHTTPHeaderField: "Authorization")
                let (data, ok) = try await URLSession.shared.data(for: request)
                #expect((ok as? HTTPURLResponse)?.statusCode == 200)
                #expect(String(decoding: data, as: UTF8.self) == "{\"jobs\":[]}")
                group.cancelAll()
            }
        }
    }

    @Test("a live oversized upload (Content-Length over the limit) gets 413 and stores nothing")
    func liveOversized() async throws {
        try await withStateDirectory(maxBlobSize: 1000) { state in
            let app = try APIServer.application(state: state, config: ServerConfig(port: 0, token: apiToken))
            try await app.test(.live) { client in
                try await client.execute(uri: "/v1/blobs", method: .post, headers: auth(), body: ByteBuffer(repeating: 1, count: 50_000)) {
                    (r: TestResponse) async throws in
                    #expect(r.status == .contentTooLarge)
                    #expect(try errorMessage(r).contains("limit of 1000 bytes"))
                }
            }
            #expect(allFiles(state.blobs.directory).isEmpty)
            #expect(entries(state.temporaryDirectory).isEmpty)
        }
    }
}
