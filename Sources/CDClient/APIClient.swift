import CDProtocol
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The HTTP API of `cdtrainerd serve` (see `APIPaths`) as async calls. Every call carries the
/// bearer token, is retried by `retry` while the daemon cannot be reached, and turns an error
/// answer into `APIClientError.server` with the daemon's message and problems.
public struct APIClient: Sendable {
    /// The daemon's base URL (`http://host:port`, possibly with a path prefix behind a proxy).
    public let server: URL
    public let token: String?
    public let retry: RetryPolicy
    /// Told before each pause of a retry (cdctl prints it, so a wait is never silent).
    let onRetry: (@Sendable (RetryNotice) -> Void)?

    /// One session for the process: its connection pool is reused by every call and client.
    static let session: URLSession = {
        let c = URLSessionConfiguration.ephemeral
        c.urlCache = nil
        c.requestCachePolicy = .reloadIgnoringLocalCacheData
        c.httpCookieStorage = nil
        return URLSession(configuration: c)
    }()

    public init(server: URL, token: String?, retry: RetryPolicy = .standard, onRetry: (@Sendable (RetryNotice) -> Void)? = nil) {
        self.server = server
        self.token = token
        self.retry = retry
        self.onRetry = onRetry
    }

    // MARK: Endpoints

    /// `GET /v1/health`.
    public func health() async throws -> HealthResponse {
        try await json(HealthResponse.self, "GET", APIPaths.health)
    }

    /// `GET /v1/jobs`: newest first; all states when `states` is empty; the daemon's default limit (100) when nil.
    public func jobs(states: [JobState] = [], limit: Int? = nil) async throws -> [Job] {
        struct List: Decodable { var jobs: [Job] }
        return try await json(List.self, "GET", APIPaths.jobs(states: states.map(\.rawValue), limit: limit)).jobs
    }

    /// `GET /v1/jobs/{id}`.
    public func job(_ id: String) async throws -> Job {
        try await json(Job.self, "GET", APIPaths.job(try checkedID(id)))
    }

    /// `POST /v1/jobs/{id}/cancel`; a finished job is a 409 `server` error.
    public func cancel(_ id: String) async throws -> CancelResult {
        try await json(CancelResult.self, "POST", APIPaths.cancel(try checkedID(id)))
    }

    /// `GET /v1/jobs/{id}/events`: events with `seq > after`; with `wait` (seconds) the daemon holds
    /// the call until the first one arrives or the wait ends ([] then).
    public func events(_ id: String, after: Int = 0, wait: Int? = nil, limit: Int? = nil) async throws -> [JobEvent] {
        let path = APIPaths.events(try checkedID(id), after: after, wait: wait, limit: limit)
        // The daemon answers at the latest after `wait`; give the transfer the usual time on top.
        return try await json([JobEvent].self, "GET", path, timeout: Self.requestTimeout + Double(wait ?? 0))
    }

    /// `GET /v1/jobs/{id}/checkpoints`, oldest first.
    public func checkpoints(_ id: String) async throws -> [CheckpointInfo] {
        try await json([CheckpointInfo].self, "GET", APIPaths.checkpoints(try checkedID(id)))
    }

    /// `GET /v1/jobs/{id}/checkpoints/{step}/files`.
    public func checkpointFiles(_ id: String, step: Int) async throws -> [CheckpointFile] {
        try await json([CheckpointFile].self, "GET", APIPaths.checkpointFiles(try checkedID(id), step: step))
    }

    /// `POST /v1/jobs/{id}/samples`: the PNG the daemon renders (several images side by side).
    public func sample(_ id: String, _ request: SampleRequest) async throws -> Data {
        let body = try APICoding.encoder().encode(request)
        // Sampling on CPU can take minutes before the first byte of the answer.
        let answer = try await send(
            "POST", APIPaths.samples(try checkedID(id)), body: body, contentType: "application/json",
            accept: "image/png", timeout: Self.sampleTimeout)
        try Self.check(answer)
        guard answer.data.starts(with: Self.pngSignature) else {
            throw APIClientError.badResponse("the sample answer is not a PNG (\(answer.data.count) bytes of \(answer.contentType ?? "unknown type"))")
        }
        return answer.data
    }

    /// `POST /v1/merges`: the merged concept bundle of finished jobs.
    public func merge(_ request: MergeRequest) async throws -> Data {
        for id in request.jobs { _ = try checkedID(id) }
        let body = try APICoding.encoder().encode(request)
        // Loading the base model and encoding the caption set takes a while on CPU.
        let answer = try await send(
            "POST", APIPaths.merges, body: body, contentType: "application/json",
            accept: "application/octet-stream", timeout: Self.sampleTimeout)
        try Self.check(answer)
        return answer.data
    }

    /// `HEAD /v1/blobs/{sha256}`: whether the daemon holds this content.
    public func blobExists(_ sha256: String) async throws -> Bool {
        let answer = try await send("HEAD", APIPaths.blob(sha256))
        if answer.status == 404 { return false }
        try Self.check(answer)
        return true
    }

    /// `POST /v1/blobs`: stores `data`; answers its hash and size (also when it was stored before).
    public func uploadBlob(_ data: Data) async throws -> BlobUploadResponse {
        let answer = try await send("POST", APIPaths.blobs, body: data, contentType: "application/octet-stream", timeout: Self.transferTimeout)
        try Self.check(answer)
        return try Self.decode(BlobUploadResponse.self, answer)
    }

    /// `POST /v1/jobs`: `created` is false when the daemon already had a job of this submission id.
    public func submit(_ request: SubmitJobRequest) async throws -> SubmitResult {
        let body = try APICoding.encoder().encode(request)
        let answer = try await send("POST", APIPaths.jobs, body: body, contentType: "application/json")
        try Self.check(answer)
        return SubmitResult(job: try Self.decode(Job.self, answer), created: answer.status == 201)
    }

    // MARK: Requests

    /// Seconds a plain call may take.
    static let requestTimeout: Double = 60
    /// Uploads and downloads: the timeout is for silence on the connection, so big files are fine.
    static let transferTimeout: Double = 300
    static let sampleTimeout: Double = 3600
    static let pngSignature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// One HTTP answer, whatever its status.
    struct Answer: Sendable {
        var status: Int
        var data: Data
        var contentType: String?
    }

    /// The job id itself, or `invalidRequest`: an id goes into the URL path, so anything else
    /// (`..`, `/`) must never reach it.
    func checkedID(_ id: String) throws -> String {
        guard JobID.isValid(id) else {
            throw APIClientError.invalidRequest("'\(id)' is not a job id (j- and 12 characters a-z, 2-7; `cdctl ls` lists them)")
        }
        return id
    }

    func url(_ path: String) throws -> URL {
        var base = server.absoluteString
        while base.hasSuffix("/") { base.removeLast() }
        guard let url = URL(string: base + path) else {
            throw APIClientError.invalidRequest("cannot form a URL from the server '\(base)' and '\(path)'")
        }
        return url
    }

    func request(_ method: String, _ path: String, contentType: String? = nil, accept: String, timeout: Double) throws -> URLRequest {
        var r = URLRequest(url: try url(path), timeoutInterval: timeout)
        r.httpMethod = method
        r.setValue(accept, forHTTPHeaderField: "Accept")
        if let contentType { r.setValue(contentType, forHTTPHeaderField: "Content-Type") }
        if let token { r.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        return r
    }

    /// Sends one request (retrying while the daemon is unreachable) and returns the answer, error statuses included.
    func send(
        _ method: String, _ path: String, body: Data? = nil, contentType: String? = nil, accept: String = "application/json",
        timeout: Double = requestTimeout
    ) async throws -> Answer {
        var r = try request(method, path, contentType: contentType, accept: accept, timeout: timeout)
        r.httpBody = body
        let request = r
        return try await withRetry {
            let (data, response) = try await Self.session.data(for: request)
            guard let http = response as? HTTPURLResponse else { throw APIClientError.badResponse("not an HTTP answer") }
            return Answer(status: http.statusCode, data: data, contentType: http.value(forHTTPHeaderField: "Content-Type"))
        }
    }

    /// A JSON call: the decoded answer, or the error the answer describes.
    func json<T: Decodable>(_ type: T.Type, _ method: String, _ path: String, timeout: Double = requestTimeout) async throws -> T {
        let answer = try await send(method, path, timeout: timeout)
        try Self.check(answer)
        return try Self.decode(T.self, answer)
    }

    /// Runs `operation` until it returns, throws something other than a connection failure, or
    /// the retry budget is spent (then `unreachable`).
    func withRetry<T: Sendable>(_ operation: @Sendable () async throws -> T) async throws -> T {
        var failures = 0
        var firstFailure: ContinuousClock.Instant?
        while true {
            do {
                return try await operation()
            } catch {
                try Task.checkCancellation()
                guard let urlError = error as? URLError else { throw error }
                let reason = Self.reason(urlError)
                let now = ContinuousClock.now
                let start = firstFailure ?? now
                firstFailure = start
                failures += 1
                let elapsed = Self.seconds(now - start)
                guard RetryPolicy.isConnectionFailure(urlError),
                      let delay = retry.nextDelay(afterFailure: failures, elapsed: elapsed)
                else {
                    throw APIClientError.unreachable(server: server.absoluteString, reason: reason, retriedSeconds: elapsed)
                }
                onRetry?(RetryNotice(server: server.absoluteString, reason: reason, failures: failures, delay: delay))
                try await Task.sleep(for: .seconds(delay))
            }
        }
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }

    static func reason(_ e: URLError) -> String {
        switch e.code {
        case .cannotConnectToHost: return "connection refused (nothing listens there)"
        case .networkConnectionLost: return "the connection broke"
        case .timedOut: return "no answer in time"
        case .cannotFindHost, .dnsLookupFailed: return "host not found"
        case .notConnectedToInternet: return "no network"
        case .badServerResponse, .zeroByteResource: return "the connection closed without an answer"
        case .unsupportedURL: return "not an http:// or https:// URL"
        default: return e.localizedDescription
        }
    }

    /// Throws the `server` error an error status carries; the body is `APIErrorResponse` JSON when
    /// the daemon wrote it, anything else (a proxy's page) is shown as text.
    static func check(_ answer: Answer) throws {
        guard answer.status >= 400 else { return }
        if let e = try? APICoding.decoder().decode(APIErrorResponse.self, from: answer.data) {
            throw APIClientError.server(status: answer.status, message: e.error, problems: e.problems ?? [], missingBlobs: e.missingBlobs ?? [])
        }
        let text = String(decoding: answer.data.prefix(300), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let message = text.isEmpty ? HTTPURLResponse.localizedString(forStatusCode: answer.status) : text
        throw APIClientError.server(status: answer.status, message: message, problems: [], missingBlobs: [])
    }

    static func decode<T: Decodable>(_ type: T.Type, _ answer: Answer) throws -> T {
        do {
            return try APICoding.decoder().decode(T.self, from: answer.data)
        } catch {
            let start = String(decoding: answer.data.prefix(120), as: UTF8.self)
            throw APIClientError.badResponse("cannot read the answer as \(T.self): \(error) (it starts with \(start.debugDescription))")
        }
    }
}

/// A retry about to happen.
public struct RetryNotice: Sendable, Equatable {
    public var server: String
    public var reason: String
    /// Consecutive failures so far (1 at the first retry).
    public var failures: Int
    /// Seconds until the next try.
    public var delay: Double
}

/// The answer of `APIClient.submit`.
public struct SubmitResult: Sendable, Equatable {
    public var job: Job
    /// false: the daemon returned the job it had created for the same submission id.
    public var created: Bool
}

/// The answer of `POST /v1/jobs/{id}/cancel`.
public struct CancelResult: Codable, Sendable, Equatable {
    public var job: Job
    public var outcome: CancelOutcome
}
