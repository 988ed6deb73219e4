import Foundation

/// Where a job is in its life.
///
/// ```
/// queued ──► running ──► succeeded | failed
///   │           │
///   │           ├──► interrupted ──► queued (requeue)
///   ▼           ▼          │
/// cancelled ◄───┴──────────┘
/// ```
/// Nothing leaves succeeded, failed or cancelled.
public enum JobState: String, Codable, Sendable, CaseIterable, CustomStringConvertible {
    case queued, running, succeeded, failed, cancelled, interrupted

    /// The states this one may move to.
    public var allowedNextStates: Set<JobState> {
        switch self {
        case .queued: return [.running, .cancelled]
        case .running: return [.succeeded, .failed, .cancelled, .interrupted]
        case .interrupted: return [.queued, .cancelled]
        case .succeeded, .failed, .cancelled: return []
        }
    }

    public func canTransition(to next: JobState) -> Bool { allowedNextStates.contains(next) }

    /// succeeded, failed, cancelled: the job is over.
    public var isTerminal: Bool { allowedNextStates.isEmpty }

    public var description: String { rawValue }
}

/// What a job event tells.
public enum JobEventKind: String, Codable, Sendable, CaseIterable {
    /// A state transition: `{"from", "to", "reason"?}`.
    case state
    /// A training step finished: `{"step", "total_steps", "loss", "learning_rate"?, "step_seconds"?, …}`.
    case progress
    /// A loss value outside the step stream (validation, averages): free-form.
    case loss
    /// A checkpoint was written: `{"step", "path"}`.
    case checkpoint
    /// The job failed or something went wrong in it: `{"message"}`.
    case error
    /// A log line: `{"message", "level"?}`.
    case log
}

/// One stored job (the `jobs` row), as the API returns it.
public struct Job: Codable, Sendable, Equatable {
    /// `j-` and 12 base32 characters (`JobID`).
    public var id: String
    /// Submission order, 1, 2, …: the FIFO order of the queue.
    public var number: Int
    public var name: String
    public var spec: JobSpec
    public var state: JobState
    /// The client's idempotency key; at most one job per submission id.
    public var submissionID: String?
    public var createdAt: Date
    public var updatedAt: Date
    /// When the job last entered `running`; nil before.
    public var startedAt: Date?
    /// When it reached succeeded/failed/cancelled.
    public var finishedAt: Date?
    /// The last step reported by the trainer (0 before the first).
    public var step: Int
    public var totalSteps: Int
    public var lastCheckpointStep: Int?
    public var lastLoss: Double?
    /// Why it failed (or was interrupted); cleared when it is requeued.
    public var error: String?
    /// A cancel was asked for while it ran; the trainer stops at the next step boundary.
    public var cancelRequested: Bool

    public init(id: String, number: Int, name: String, spec: JobSpec, state: JobState, submissionID: String?,
                createdAt: Date, updatedAt: Date, startedAt: Date?, finishedAt: Date?, step: Int, totalSteps: Int,
                lastCheckpointStep: Int?, lastLoss: Double?, error: String?, cancelRequested: Bool) {
        self.id = id
        self.number = number
        self.name = name
        self.spec = spec
        self.state = state
        self.submissionID = submissionID
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.step = step
        self.totalSteps = totalSteps
        self.lastCheckpointStep = lastCheckpointStep
        self.lastLoss = lastLoss
        self.error = error
        self.cancelRequested = cancelRequested
    }

    enum CodingKeys: String, CodingKey {
        case id, number, name, spec, state
        case submissionID = "submission_id"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
        case startedAt = "started_at"
        case finishedAt = "finished_at"
        case step
        case totalSteps = "total_steps"
        case lastCheckpointStep = "last_checkpoint_step"
        case lastLoss = "last_loss"
        case error
        case cancelRequested = "cancel_requested"
    }
}

/// One entry of a job's event log. `seq` counts 1, 2, … per job; `events(id, after:)` pages on it.
public struct JobEvent: Codable, Sendable, Equatable {
    public var jobID: String
    public var seq: Int
    public var time: Date
    public var kind: JobEventKind
    public var payload: JSONValue

    public init(jobID: String, seq: Int, time: Date, kind: JobEventKind, payload: JSONValue) {
        self.jobID = jobID
        self.seq = seq
        self.time = time
        self.kind = kind
        self.payload = payload
    }

    enum CodingKeys: String, CodingKey {
        case jobID = "job_id"
        case seq, time, kind, payload
    }
}

/// The answer of `JobStore.cancel`.
public enum CancelOutcome: String, Codable, Sendable {
    /// It was queued or interrupted and is now cancelled.
    case cancelled
    /// It is running: the trainer will stop it at the next step boundary.
    case requested
    /// It had been cancelled before (nothing changed).
    case alreadyCancelled = "already_cancelled"
}

/// Job ids: `j-` followed by 12 characters of the RFC 4648 base32 alphabet in lower case (60 random bits).
public enum JobID {
    static let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567")

    /// A fresh random id.
    public static func random() -> String {
        var g = SystemRandomNumberGenerator()
        var bits = g.next() as UInt64
        var s = "j-"
        for _ in 0..<12 {
            s.append(alphabet[Int(bits & 31)])
            bits >>= 5
        }
        return s
    }

    /// Whether `s` has the form of a job id (checked before it reaches a query or a path).
    public static func isValid(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard u.count == 14, u[0] == UInt8(ascii: "j"), u[1] == UInt8(ascii: "-") else { return false }
        return u[2...].allSatisfy { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "2")...UInt8(ascii: "7")).contains($0) }
    }
}
