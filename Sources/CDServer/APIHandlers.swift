import CDProtocol
import Foundation
import Hummingbird
import NIOCore

/// The endpoint bodies (routing and errors are in `APIServer`).
struct APIHandlers: Sendable {
    let state: StateDirectory
    let config: ServerConfig
    let services: APIServices

    // MARK: Blobs

    /// Streams the body into a blob writer; 413 (nothing stored) past the limit.
    func uploadBlob(_ request: Request) async throws -> Response {
        let limit = min(config.maxBlobBodySize, state.blobs.maxBlobSize)
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
            throw APIError(.contentTooLarge, "blob larger than the limit of \(limit) bytes")
        }
        let writer = try state.blobs.makeWriter()
        do {
            for try await chunk in request.body {
                guard writer.byteCount + chunk.readableBytes <= limit else {
                    throw APIError(.contentTooLarge, "blob larger than the limit of \(limit) bytes")
                }
                try chunk.withUnsafeReadableBytes { try writer.write($0) }
            }
            let size = writer.byteCount
            let sha = try writer.finish()
            return try APIServer.json(BlobUploadResponse(sha256: sha, size: size), status: .created)
        } catch {
            writer.abort()
            throw error
        }
    }

    func headBlob(_ sha: String) throws -> Response {
        guard BlobStore.isValidSHA(sha) else { throw BlobStoreError.invalidSHA(sha) }
        guard try state.blobs.contains(sha) else { return Response(status: .notFound) }
        return Response(status: .ok)
    }

    // MARK: Jobs

    func submit(_ request: Request) async throws -> Response {
        let submission = try await decodeBody(SubmitJobRequest.self, request)
        var spec = submission.spec
        try services.admit(&spec, Set(submission.blobs.keys))
        try spec.validate(file: "spec")
        let (job, created) = try state.jobs.submit(
            spec: spec, blobs: submission.blobs, submissionID: submission.submissionID)
        return try APIServer.json(job, status: created ? .created : .ok)
    }

    struct JobList: Encodable { var jobs: [Job] }

    func list(_ request: Request) throws -> Response {
        let q = request.uri.queryParameters
        var states: Set<JobState>?
        if let s = q["state"], !s.isEmpty {
            var set = Set<JobState>()
            for name in s.split(separator: ",") {
                guard let st = JobState(rawValue: String(name)) else {
                    throw APIError(
                        .badRequest,
                        "unknown state '\(BlobStore.printable(String(name)))' (one of \(JobState.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                set.insert(st)
            }
            states = set
        }
        let limit = try Self.intParameter(q["limit"], name: "limit", default: 100, range: 1...10_000)
        return try APIServer.json(JobList(jobs: try state.jobs.list(states: states, limit: limit)))
    }

    struct CancelAnswer: Encodable {
        var job: Job
        var outcome: CancelOutcome
    }

    func cancel(_ id: String) throws -> Response {
        let (job, outcome) = try state.jobs.cancel(id)
        return try APIServer.json(CancelAnswer(job: job, outcome: outcome))
    }

    // MARK: Events

    /// A page of events (long poll with `wait`), or server-sent events with `Accept: text/event-stream`.
    func events(_ request: Request, _ id: String) async throws -> Response {
        let q = request.uri.queryParameters
        var after = try Self.intParameter(q["after"], name: "after", default: 0, range: 0...Int.max)
        let limit = try Self.intParameter(q["limit"], name: "limit", default: 1000, range: 1...10_000)
        let wait = try Self.intParameter(q["wait"], name: "wait", default: 0, range: 0...config.maxEventWaitSeconds)
        _ = try state.jobs.job(id)  // 404 before anything else

        if request.headers[.accept]?.contains("text/event-stream") == true {
            if let last = request.headers[HTTPFields.Element.Name("Last-Event-ID")!].flatMap({ Int($0) }), last >= 0 { after = last }
            return eventStream(id, after: after, limit: limit)
        }
        let events = wait > 0
            ? try await state.jobs.waitForEvents(id, after: after, limit: limit, timeout: .seconds(wait))
            : try state.jobs.events(id, after: after, limit: limit)
        return try APIServer.json(events)
    }

    /// `id: seq`, `event: kind`, `data: JobEvent JSON` per event; a comment every 15 s of silence;
    /// ends once the job is finished and every event has been sent.
    func eventStream(_ id: String, after start: Int, limit: Int) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream; charset=utf-8"
        headers[.cacheControl] = "no-cache"
        let jobs = state.jobs
        let body = ResponseBody { writer in
            var after = start
            let encoder = APICoding.encoder()
            while !Task.isCancelled {
                let events = try await jobs.waitForEvents(id, after: after, limit: limit, timeout: .seconds(15))
                if events.isEmpty {
                    if try jobs.job(id).state.isTerminal, try jobs.lastEventSeq(id) <= after { break }
                    try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                    continue
                }
                var text = ""
                for e in events {
                    let data = String(decoding: try encoder.encode(e), as: UTF8.self)
                    text += "id: \(e.seq)\nevent: \(e.kind.rawValue)\ndata: \(data)\n\n"
                }
                try await writer.write(ByteBuffer(string: text))
                after = events.last!.seq
                if events.count < limit, try jobs.job(id).state.isTerminal, try jobs.lastEventSeq(id) <= after { break }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }

    // MARK: Metrics

    func metrics() throws -> Response {
        let counts = try state.jobs.counts()
        var text = "# HELP cdtrainerd_jobs Jobs by state.\n# TYPE cdtrainerd_jobs gauge\n"
        for s in JobState.allCases {
            text += "cdtrainerd_jobs{state=\"\(s.rawValue)\"} \(counts[s] ?? 0)\n"
        }
        text += "# HELP cdtrainerd_queue_depth Jobs waiting to run.\n# TYPE cdtrainerd_queue_depth gauge\n"
        text += "cdtrainerd_queue_depth \(counts[.queued] ?? 0)\n"
        text += "# HELP cdtrainerd_jobs_total Jobs in the store (ever submitted).\n# TYPE cdtrainerd_jobs_total counter\n"
        text += "cdtrainerd_jobs_total \(counts.values.reduce(0, +))\n"
        text += services.metrics()
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    // MARK: Samples

    /// Runs the daemon's sampler (which checks the request) on a checkpoint of the job.
    func sample(_ request: Request, _ id: String) async throws -> Response {
        let body = try await decodeBody(SampleRequest.self, request)
        let job = try state.jobs.job(id)
        let checkpoints = try state.jobs.checkpoints(id)
        guard let step = body.step ?? checkpoints.last?.step else {
            throw APIError(.notFound, "job \(id) has no checkpoint yet (state \(job.state)); sample once it has written one")
        }
        let folder = try checkpointFolder(id, step: step)
        guard let sampler = services.sample else {
            throw APIError(.serviceUnavailable, "this server does not sample (no trainer attached)")
        }
        let png = try await sampler(job, folder, body)
        var headers = HTTPFields()
        headers[.contentType] = "image/png"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: png)))
    }

    // MARK: Merges

    /// Checks the jobs (known, succeeded, one base model) and runs the daemon's merge.
    func merge(_ request: Request) async throws -> Response {
        let body = try await decodeBody(MergeRequest.self, request)
        guard !body.jobs.isEmpty, body.jobs.count <= 64 else { throw APIError(.unprocessableContent, "jobs: give 1…64 job ids") }
        if let c = body.categories, c.count != body.jobs.count {
            throw APIError(.unprocessableContent, "categories: \(c.count) entries for \(body.jobs.count) jobs")
        }
        var jobs: [(job: Job, folder: String)] = []
        for id in body.jobs {
            guard JobID.isValid(id) else { throw JobStoreError.notFound(jobID: id) }
            let job = try state.jobs.job(id)
            guard job.state == .succeeded else { throw APIError(.conflict, "job \(id) is \(job.state); only succeeded jobs can be merged") }
            jobs.append((job, try state.jobDirectory(id)))
        }
        if Set(jobs.map(\.job.spec.model)).count > 1 {
            throw APIError(.unprocessableContent, "the jobs were trained on different models (\(Set(jobs.map(\.job.spec.model)).sorted().joined(separator: ", ")))")
        }
        guard let merge = services.merge else { throw APIError(.serviceUnavailable, "this server does not merge (no trainer attached)") }
        let bytes = try await merge(jobs, body)
        var headers = HTTPFields()
        headers[.contentType] = "application/octet-stream"
        headers[.contentDisposition] = "attachment; filename=\"merged.concept.safetensors\""
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    // MARK: Helpers

    /// A JSON request body of at most `maxJSONBodySize` bytes (413 beyond), decoded (400 with the
    /// field at fault when it does not decode).
    func decodeBody<T: Decodable>(_ type: T.Type, _ request: Request) async throws -> T {
        let buffer = try await request.body.collect(upTo: config.maxJSONBodySize)
        do {
            return try APICoding.decoder().decode(T.self, from: Data(buffer.readableBytesView))
        } catch let e as DecodingError {
            throw APIError(.badRequest, "bad JSON: " + Self.describe(e))
        } catch {
            throw APIError(.badRequest, "bad JSON: \(error)")
        }
    }

    static func intParameter(_ value: Substring?, name: String, default d: Int, range: ClosedRange<Int>) throws -> Int {
        guard let value, !value.isEmpty else { return d }
        guard let n = Int(value), range.contains(n) else {
            throw APIError(
                .badRequest,
                "\(name) must be an integer in \(range.lowerBound)…\(range.upperBound == Int.max ? "" : String(range.upperBound)) (got '\(BlobStore.printable(String(value)))')")
        }
        return n
    }

    static func describe(_ e: DecodingError) -> String {
        func path(_ p: [any CodingKey]) -> String {
            p.isEmpty ? "(top level)" : p.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
                .replacingOccurrences(of: ".[", with: "[")
        }
        switch e {
        case let .keyNotFound(key, ctx): return "missing key '\(key.stringValue)' at \(path(ctx.codingPath))"
        case let .typeMismatch(type, ctx): return "\(path(ctx.codingPath)): expected \(type)"
        case let .valueNotFound(type, ctx): return "\(path(ctx.codingPath)): expected \(type), got null"
        case let .dataCorrupted(ctx):
            return ctx.codingPath.isEmpty ? "not valid JSON" : "\(path(ctx.codingPath)): \(ctx.debugDescription)"
        @unknown default: return "\(e)"
        }
    }
}
