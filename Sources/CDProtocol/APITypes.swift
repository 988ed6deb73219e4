import Foundation

/// The HTTP API of `cdtrainerd serve` (rank 0): paths and the request/response bodies that are not
/// store records, shared by the daemon and `cdctl`. JSON everywhere, snake_case keys, dates as
/// ISO 8601 with milliseconds (`APICoding`). Every call needs `Authorization: Bearer <token>`
/// except `GET /v1/health`.
///
/// | method and path | body | answer |
/// |---|---|---|
/// | `POST /v1/blobs` | raw bytes (one file) | 201 `BlobUploadResponse` (also when the content was stored before); 413 over the limit |
/// | `HEAD /v1/blobs/{sha256}` | | 200 stored, 404 not, 400 not a hash |
/// | `POST /v1/jobs` | `SubmitJobRequest` | 201 `Job` (200 + the existing job for a known `submission_id`); 400 bad JSON, 422 invalid spec (`problems`) or unknown blobs (`missing_blobs`) |
/// | `GET /v1/jobs?state=queued,running&limit=100` | | 200 `{"jobs": [Job]}`, newest first |
/// | `GET /v1/jobs/{id}` | | 200 `Job`; 404 |
/// | `POST /v1/jobs/{id}/cancel` | | 200 `{"job": Job, "outcome": "cancelled"|"requested"|"already_cancelled"}`; 409 finished |
/// | `GET /v1/jobs/{id}/events?after=N&limit=L&wait=S` | | 200 `[JobEvent]` (`seq > after`; waits up to S ≤ 60 s for the first); `Accept: text/event-stream`: server-sent events until the job is finished |
/// | `GET /v1/jobs/{id}/checkpoints` | | 200 `[CheckpointInfo]` |
/// | `GET /v1/jobs/{id}/checkpoints/{step}/files` | | 200 `[CheckpointFile]` |
/// | `GET /v1/jobs/{id}/checkpoints/{step}/files/{path…}` | | 200 the file (`application/octet-stream`) |
/// | `POST /v1/jobs/{id}/samples` | `SampleRequest` | 200 a PNG (`image/png`; several images side by side); 404 no checkpoint; 422 bad values; 503 no sampler |
/// | `POST /v1/merges` | `MergeRequest` | 200 the merged concept bundle (`application/octet-stream`); 404 unknown job; 409 a job not succeeded; 422 bad inputs; 503 no trainer |
/// | `GET /v1/health` | | 200 `HealthResponse` (no token needed) |
/// | `GET /metrics` | | 200 Prometheus text |
///
/// Errors: `APIErrorResponse` with the status (400, 401, 404, 409, 413, 422, 500). A 4xx never
/// changes stored jobs or blobs.
public enum APIPaths {
    public static let version = "v1"
    public static let health = "/v1/health"
    public static let metrics = "/metrics"
    public static let blobs = "/v1/blobs"
    public static let jobs = "/v1/jobs"

    public static func blob(_ sha256: String) -> String { "/v1/blobs/\(sha256)" }
    public static func job(_ id: String) -> String { "/v1/jobs/\(id)" }
    public static func cancel(_ id: String) -> String { "/v1/jobs/\(id)/cancel" }
    public static func events(_ id: String, after: Int = 0, wait: Int? = nil, limit: Int? = nil) -> String {
        var q = "after=\(after)"
        if let wait { q += "&wait=\(wait)" }
        if let limit { q += "&limit=\(limit)" }
        return "/v1/jobs/\(id)/events?\(q)"
    }
    public static func checkpoints(_ id: String) -> String { "/v1/jobs/\(id)/checkpoints" }
    public static func checkpointFiles(_ id: String, step: Int) -> String { "/v1/jobs/\(id)/checkpoints/\(step)/files" }
    /// `relativePath` components percent-encoded (`/` kept as the separator).
    public static func checkpointFile(_ id: String, step: Int, relativePath: String) -> String {
        let allowed = CharacterSet.urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#%;"))
        let encoded = relativePath.split(separator: "/", omittingEmptySubsequences: false)
            .map { $0.addingPercentEncoding(withAllowedCharacters: allowed) ?? String($0) }
            .joined(separator: "/")
        return "/v1/jobs/\(id)/checkpoints/\(step)/files/\(encoded)"
    }
    public static func samples(_ id: String) -> String { "/v1/jobs/\(id)/samples" }
    public static let merges = "/v1/merges"
    public static func jobs(states: [String] = [], limit: Int? = nil) -> String {
        var q: [String] = []
        if !states.isEmpty { q.append("state=" + states.joined(separator: ",")) }
        if let limit { q.append("limit=\(limit)") }
        return q.isEmpty ? jobs : jobs + "?" + q.joined(separator: "&")
    }
}

/// `POST /v1/jobs`.
public struct SubmitJobRequest: Codable, Sendable, Equatable {
    public var spec: JobSpec
    /// Client file name → SHA-256 of an uploaded blob.
    public var blobs: [String: String]
    /// Idempotency key: a second submit with the same id returns the first job (200).
    public var submissionID: String?

    public init(spec: JobSpec, blobs: [String: String] = [:], submissionID: String? = nil) {
        self.spec = spec
        self.blobs = blobs
        self.submissionID = submissionID
    }

    enum CodingKeys: String, CodingKey {
        case spec, blobs
        case submissionID = "submission_id"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        spec = try c.decode(JobSpec.self, forKey: .spec)
        blobs = try c.decodeIfPresent([String: String].self, forKey: .blobs) ?? [:]
        submissionID = try c.decodeIfPresent(String.self, forKey: .submissionID)
    }
}

/// `POST /v1/jobs/{id}/samples`: images from the base model with a checkpoint of the job applied.
/// Unset fields take the daemon's sampling defaults (`[defaults]` of its configuration).
public struct SampleRequest: Codable, Sendable, Equatable {
    public var prompt: String
    public var negativePrompt: String?
    /// The checkpoint's step; nil: the newest.
    public var step: Int?
    /// How strongly the trained weights apply (1 = as trained).
    public var strength: Double?
    public var steps: Int?
    public var guidance: Double?
    /// `dpmpp-2m`, `ddim`, `euler-a`, … (as in job files' `validation.scheduler`).
    public var scheduler: String?
    public var seed: UInt64?
    public var width: Int?
    public var height: Int?
    /// Images, placed side by side in the answer.
    public var count: Int?

    public init(prompt: String, negativePrompt: String? = nil, step: Int? = nil, strength: Double? = nil, steps: Int? = nil,
                guidance: Double? = nil, scheduler: String? = nil, seed: UInt64? = nil, width: Int? = nil, height: Int? = nil,
                count: Int? = nil) {
        self.prompt = prompt
        self.negativePrompt = negativePrompt
        self.step = step
        self.strength = strength
        self.steps = steps
        self.guidance = guidance
        self.scheduler = scheduler
        self.seed = seed
        self.width = width
        self.height = height
        self.count = count
    }

    enum CodingKeys: String, CodingKey {
        case prompt, step, strength, steps, guidance, scheduler, seed, width, height, count
        case negativePrompt = "negative_prompt"
    }
}

/// `POST /v1/merges`: the closed-form merge (paper §3.2) of finished single-concept jobs of one base
/// model, in the given order (tokens become `<new1>`, `<new2>`, …).
public struct MergeRequest: Codable, Sendable, Equatable {
    public var jobs: [String]
    /// Category words per job (nil: each job's class prompt).
    public var categories: [String]?

    public init(jobs: [String], categories: [String]? = nil) {
        self.jobs = jobs
        self.categories = categories
    }
}

/// `POST /v1/blobs`.
public struct BlobUploadResponse: Codable, Sendable, Equatable {
    public var sha256: String
    public var size: Int
    public init(sha256: String, size: Int) {
        self.sha256 = sha256
        self.size = size
    }
}

/// One checkpoint of a job (`GET /v1/jobs/{id}/checkpoints`).
public struct CheckpointInfo: Codable, Sendable, Equatable {
    public var step: Int
    /// Where the trainer wrote it, relative to the job's folder in the state directory when it lies inside.
    public var path: String
    public var time: Date
    public init(step: Int, path: String, time: Date) {
        self.step = step
        self.path = path
        self.time = time
    }
}

/// One file of a checkpoint folder (`GET …/checkpoints/{step}/files`).
public struct CheckpointFile: Codable, Sendable, Equatable {
    /// Relative to the checkpoint folder, `/`-separated.
    public var path: String
    public var size: Int
    public init(path: String, size: Int) {
        self.path = path
        self.size = size
    }
}

/// `GET /v1/health`.
public struct HealthResponse: Codable, Sendable, Equatable {
    public var status: String
    public var apiVersion: String
    /// MPI ranks training (absent when no trainer is attached to the API).
    public var worldSize: Int?
    public init(status: String = "ok", apiVersion: String = APIPaths.version, worldSize: Int? = nil) {
        self.status = status
        self.apiVersion = apiVersion
        self.worldSize = worldSize
    }
    enum CodingKeys: String, CodingKey {
        case status
        case apiVersion = "api_version"
        case worldSize = "world_size"
    }
}

/// The body of every error answer.
public struct APIErrorResponse: Codable, Sendable, Equatable {
    /// What went wrong and, where it helps, what to do.
    public var error: String
    /// An invalid job spec: every problem (422).
    public var problems: [JobFileError.Problem]?
    /// Unknown blobs of a submission (422): client file name and hash of each.
    public var missingBlobs: [MissingBlob]?

    public struct MissingBlob: Codable, Sendable, Equatable {
        public var fileName: String
        public var sha256: String
        public init(fileName: String, sha256: String) {
            self.fileName = fileName
            self.sha256 = sha256
        }
        enum CodingKeys: String, CodingKey {
            case fileName = "file_name"
            case sha256
        }
    }

    public init(error: String, problems: [JobFileError.Problem]? = nil, missingBlobs: [MissingBlob]? = nil) {
        self.error = error
        self.problems = problems
        self.missingBlobs = missingBlobs
    }

    enum CodingKeys: String, CodingKey {
        case error, problems
        case missingBlobs = "missing_blobs"
    }
}

/// The JSON coders of the API: dates as ISO 8601 UTC with milliseconds (`2026-11-27T09:30:00.123Z`);
/// decoding also accepts dates without fractional seconds.
public enum APICoding {
    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
        }
        return e
    }

    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .custom { decoder in
            let c = try decoder.singleValueContainer()
            let s = try c.decode(String.self)
            if let date = try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(s) { return date }
            if let date = try? Date.ISO8601FormatStyle().parse(s) { return date }
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not an ISO 8601 date: \(s)")
        }
        return d
    }
}
