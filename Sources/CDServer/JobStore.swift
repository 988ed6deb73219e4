import CDProtocol
import Foundation
import GRDB

/// Jobs, their state transitions and events, and the blobs each job references, in one SQLite
/// database (GRDB `DatabasePool`, WAL: readers never wait for the writer).
///
/// Every method is synchronous, thread-safe and short (one transaction); every write is one
/// transaction that either happens whole or not at all, so a thrown error leaves the store as it
/// was. `waitForEvents` is the one async call, for streaming endpoints.
///
/// Roles: the API layer calls `submit`, `job`, `list`, `events`/`waitForEvents`, `cancel`; the
/// scheduler calls `requeueInterrupted` once at start, then `claimNextQueued` (or `nextQueued` +
/// `transition(.running)`); the trainer reports `recordProgress`/`recordCheckpoint`, polls
/// `cancelRequested` at step boundaries and ends with `transition(to: .succeeded|.failed|…)`.
public final class JobStore: Sendable {
    /// The database file.
    public let path: String
    public let blobs: BlobStore
    let pool: DatabasePool
    let changes = ChangeSignal()

    /// Opens (creating and migrating when needed) the database at `path`.
    public init(path: String, blobs: BlobStore) throws {
        self.path = path
        self.blobs = blobs
        var config = Configuration()
        config.label = "cdtrainerd.jobs"
        config.busyMode = .timeout(10)  // another process (sqlite3 shell, backup) holding a lock
        config.foreignKeysEnabled = true
        pool = try DatabasePool(path: path, configuration: config)
        try Self.migrator.migrate(pool)
    }

    /// Closes the database; the store must not be used afterwards.
    public func close() throws {
        try pool.close()
    }

    // MARK: Schema

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            let states = JobState.allCases.map { "'\($0.rawValue)'" }.joined(separator: ", ")
            let kinds = JobEventKind.allCases.map { "'\($0.rawValue)'" }.joined(separator: ", ")
            try db.execute(sql: """
                CREATE TABLE jobs (
                    id TEXT PRIMARY KEY NOT NULL,
                    number INTEGER NOT NULL UNIQUE,
                    name TEXT NOT NULL,
                    spec TEXT NOT NULL,
                    state TEXT NOT NULL CHECK (state IN (\(states))),
                    submission_id TEXT UNIQUE,
                    created_at DATETIME NOT NULL,
                    updated_at DATETIME NOT NULL,
                    started_at DATETIME,
                    finished_at DATETIME,
                    step INTEGER NOT NULL DEFAULT 0,
                    total_steps INTEGER NOT NULL,
                    last_checkpoint_step INTEGER,
                    last_loss REAL,
                    error TEXT,
                    cancel_requested BOOLEAN NOT NULL DEFAULT 0
                );
                CREATE INDEX jobs_by_state ON jobs(state, number);
                CREATE TABLE job_events (
                    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                    seq INTEGER NOT NULL,
                    time DATETIME NOT NULL,
                    kind TEXT NOT NULL CHECK (kind IN (\(kinds))),
                    payload TEXT NOT NULL,
                    PRIMARY KEY (job_id, seq)
                ) WITHOUT ROWID;
                CREATE TABLE job_blobs (
                    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                    file_name TEXT NOT NULL,
                    sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
                    PRIMARY KEY (job_id, file_name)
                ) WITHOUT ROWID;
                CREATE INDEX job_blobs_by_sha ON job_blobs(sha256);
                """)
        }
        return m
    }

    // MARK: Submission

    /// Stores a new queued job (with a `state` event), or returns the job created earlier with the
    /// same `submissionID` (then `created` is false and nothing changes). `blobs` maps the client's
    /// file names to SHA-256 hashes; every name must pass `BlobStore.validateFileName`, every hash
    /// must be stored in `self.blobs` (else `missingBlobs` naming all absent ones). Nothing is
    /// written when anything is wrong. The spec itself is stored as given (validate it first).
    public func submit(spec: JobSpec, blobs refs: [String: String], submissionID: String?) throws -> (job: Job, created: Bool) {
        if let sid = submissionID {
            guard !sid.isEmpty, sid.utf8.count <= 200 else {
                throw JobStoreError.invalidArgument("submission id must be 1…200 bytes")
            }
        }
        guard spec.steps >= 0 else { throw JobStoreError.invalidArgument("steps must not be negative") }
        let sorted = refs.sorted { $0.key < $1.key }
        for (name, sha) in sorted {
            do {
                try BlobStore.validateFileName(name)
            } catch let e as BlobStoreError {
                if case let .invalidFileName(_, reason) = e { throw JobStoreError.invalidBlobReference(fileName: name, reason: reason) }
                throw e
            }
            guard BlobStore.isValidSHA(sha) else {
                throw JobStoreError.invalidBlobReference(fileName: name, reason: "'\(BlobStore.printable(sha))' is not a SHA-256 (64 lowercase hex characters)")
            }
        }
        let specText = try Self.encodeSpec(spec)
        let result: (Job, Bool) = try pool.write { db in
            if let sid = submissionID,
               let existing = try String.fetchOne(db, sql: "SELECT id FROM jobs WHERE submission_id = ?", arguments: [sid]) {
                return (try self.fetchJob(db, existing), false)
            }
            var missing: [BlobReference] = []
            for (name, sha) in sorted where !(try self.blobs.contains(sha)) {
                missing.append(BlobReference(fileName: name, sha256: sha))
            }
            guard missing.isEmpty else { throw JobStoreError.missingBlobs(missing) }

            var id = JobID.random()
            while try Bool.fetchOne(db, sql: "SELECT 1 FROM jobs WHERE id = ?", arguments: [id]) != nil {
                id = JobID.random()
            }
            let number = (try Int.fetchOne(db, sql: "SELECT MAX(number) FROM jobs") ?? 0) + 1
            let now = Date()
            try db.execute(
                sql: """
                    INSERT INTO jobs (id, number, name, spec, state, submission_id, created_at, updated_at, step, total_steps)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)
                    """,
                arguments: [id, number, spec.name, specText, JobState.queued.rawValue, submissionID, now, now, spec.steps])
            for (name, sha) in sorted {
                try db.execute(sql: "INSERT INTO job_blobs (job_id, file_name, sha256) VALUES (?, ?, ?)", arguments: [id, name, sha])
            }
            _ = try self.insertEvent(db, id, .state, ["from": nil, "to": .string(JobState.queued.rawValue), "reason": "submitted"], at: now)
            return (try self.fetchJob(db, id), true)
        }
        if result.1 { changes.signal() }
        return (job: result.0, created: result.1)
    }

    // MARK: Reading

    /// The job with this id, or `notFound`.
    public func job(_ id: String) throws -> Job {
        try pool.read { db in try self.fetchJob(db, id) }
    }

    /// The blobs the job was submitted with: client file name → SHA-256.
    public func jobBlobs(_ id: String) throws -> [String: String] {
        try pool.read { db in
            try self.requireJob(db, id)
            var out: [String: String] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT file_name, sha256 FROM job_blobs WHERE job_id = ?", arguments: [id]) {
                out[try row.decode(forColumn: "file_name")] = try row.decode(forColumn: "sha256")
            }
            return out
        }
    }

    /// Jobs in any of `states` (all when nil), newest first, at most `limit` (1…10000).
    public func list(states: Set<JobState>? = nil, limit: Int = 100) throws -> [Job] {
        guard (1...10_000).contains(limit) else { throw JobStoreError.invalidArgument("limit must be 1…10000") }
        return try pool.read { db in
            var sql = "SELECT * FROM jobs"
            var args: StatementArguments = []
            if let states {
                if states.isEmpty { return [] }
                sql += " WHERE state IN (" + Array(repeating: "?", count: states.count).joined(separator: ", ") + ")"
                for s in states.sorted(by: { $0.rawValue < $1.rawValue }) { args += [s.rawValue] }
            }
            sql += " ORDER BY number DESC LIMIT ?"
            args += [limit]
            return try Row.fetchAll(db, sql: sql, arguments: args).map(self.decodeJob)
        }
    }

    /// How many jobs are in each state (every state present, 0 when none).
    public func counts() throws -> [JobState: Int] {
        try pool.read { db in
            var out = Dictionary(uniqueKeysWithValues: JobState.allCases.map { ($0, 0) })
            for row in try Row.fetchAll(db, sql: "SELECT state, COUNT(*) AS n FROM jobs GROUP BY state") {
                if let s = JobState(rawValue: try row.decode(forColumn: "state")) { out[s] = try row.decode(forColumn: "n") }
            }
            return out
        }
    }

    /// The oldest queued job (FIFO by submission), or nil.
    public func nextQueued() throws -> Job? {
        try pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE state = 'queued' ORDER BY number LIMIT 1").map(self.decodeJob)
        }
    }

    // MARK: Events

    /// Events of a job with `seq > after`, oldest first, at most `limit` (1…10000).
    public func events(_ id: String, after: Int = 0, limit: Int = 1000) throws -> [JobEvent] {
        guard (1...10_000).contains(limit) else { throw JobStoreError.invalidArgument("limit must be 1…10000") }
        return try pool.read { db in
            try self.requireJob(db, id)
            return try Row.fetchAll(
                db, sql: "SELECT * FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                arguments: [id, after, limit]
            ).map(self.decodeEvent)
        }
    }

    /// The highest event `seq` of a job (0 when it has none).
    public func lastEventSeq(_ id: String) throws -> Int {
        try pool.read { db in
            try self.requireJob(db, id)
            return try Int.fetchOne(db, sql: "SELECT MAX(seq) FROM job_events WHERE job_id = ?", arguments: [id]) ?? 0
        }
    }

    /// Like `events`, but when there are none yet, waits up to `timeout` for new ones (long poll /
    /// server-sent events). Returns [] on timeout or task cancellation.
    public func waitForEvents(_ id: String, after: Int = 0, limit: Int = 1000, timeout: Duration) async throws -> [JobEvent] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let seen = changes.current
            let found = try events(id, after: after, limit: limit)
            if !found.isEmpty || Task.isCancelled { return found }
            let now = ContinuousClock.now
            if now >= deadline { return [] }
            await changes.wait(changedFrom: seen, timeout: deadline - now)
        }
    }

    /// Appends a `log`, `loss` or `error` event (any state). Progress, checkpoints and state changes
    /// have their own calls, which also update the job.
    @discardableResult
    public func appendEvent(_ id: String, kind: JobEventKind, payload: JSONValue) throws -> JobEvent {
        guard [.log, .loss, .error].contains(kind) else {
            throw JobStoreError.invalidArgument("\(kind.rawValue) events are written by their own calls")
        }
        let e = try pool.write { db in
            try self.requireJob(db, id)
            let e = try self.insertEvent(db, id, kind, payload, at: Date())
            try db.execute(sql: "UPDATE jobs SET updated_at = ? WHERE id = ?", arguments: [e.time, id])
            return e
        }
        changes.signal()
        return e
    }

    /// A `log` event `{"message", "level"}`.
    @discardableResult
    public func log(_ id: String, _ message: String, level: String = "info") throws -> JobEvent {
        try appendEvent(id, kind: .log, payload: ["message": .string(message), "level": .string(level)])
    }

    // MARK: Trainer reports

    /// A finished optimizer step of a running job: sets `step`/`last_loss` and appends a `progress`
    /// event `{"step", "total_steps", "loss", "learning_rate"?, "step_seconds"?, …extra}`.
    @discardableResult
    public func recordProgress(
        _ id: String, step: Int, loss: Double?, learningRate: Double? = nil, stepSeconds: Double? = nil,
        extra: [String: JSONValue] = [:]
    ) throws -> JobEvent {
        guard step >= 0 else { throw JobStoreError.invalidArgument("step must not be negative") }
        let e = try pool.write { db in
            let job = try self.fetchJob(db, id)
            guard job.state == .running else { throw JobStoreError.notRunning(jobID: id, state: job.state) }
            var payload = extra
            payload["step"] = .int(step)
            payload["total_steps"] = .int(job.totalSteps)
            payload["loss"] = .optional(loss)
            if let learningRate { payload["learning_rate"] = .double(learningRate) }
            if let stepSeconds { payload["step_seconds"] = .double(stepSeconds) }
            let now = Date()
            try db.execute(
                sql: "UPDATE jobs SET step = ?, last_loss = ?, updated_at = ? WHERE id = ?",
                arguments: [step, loss.flatMap { $0.isFinite ? $0 : nil }, now, id])
            return try self.insertEvent(db, id, .progress, .object(payload), at: now)
        }
        changes.signal()
        return e
    }

    /// A checkpoint of a running job was written at `step` (`path`: where, as the trainer names it):
    /// sets `last_checkpoint_step` and appends a `checkpoint` event `{"step", "path"}`.
    @discardableResult
    public func recordCheckpoint(_ id: String, step: Int, path: String) throws -> JobEvent {
        guard step >= 0 else { throw JobStoreError.invalidArgument("step must not be negative") }
        let e = try pool.write { db in
            let job = try self.fetchJob(db, id)
            guard job.state == .running else { throw JobStoreError.notRunning(jobID: id, state: job.state) }
            let now = Date()
            try db.execute(
                sql: "UPDATE jobs SET last_checkpoint_step = ?, updated_at = ? WHERE id = ?", arguments: [step, now, id])
            return try self.insertEvent(db, id, .checkpoint, ["step": .int(step), "path": .string(path)], at: now)
        }
        changes.signal()
        return e
    }

    /// The checkpoints recorded for a job, oldest first (from its `checkpoint` events).
    public func checkpoints(_ id: String) throws -> [(step: Int, path: String, time: Date)] {
        try pool.read { db in
            try self.requireJob(db, id)
            return try Row.fetchAll(
                db, sql: "SELECT * FROM job_events WHERE job_id = ? AND kind = 'checkpoint' ORDER BY seq", arguments: [id]
            ).map(self.decodeEvent).compactMap { e in
                guard let step = e.payload["step"]?.intValue, let path = e.payload["path"]?.stringValue else { return nil }
                return (step, path, e.time)
            }
        }
    }

    // MARK: State changes

    /// Moves a job to `next` when `JobState.allowedNextStates` allows it (else `illegalTransition`
    /// and nothing changes), with a `state` event `{"from", "to", "reason"?}`; `error` is stored on
    /// the job (and, for `failed`, also appended as an `error` event). Entering `running` sets
    /// `started_at`; a terminal state sets `finished_at`; `queued`/`running` clear the error; a
    /// pending cancel request is cleared by every transition except running → interrupted.
    @discardableResult
    public func transition(_ id: String, to next: JobState, error: String? = nil) throws -> Job {
        let job = try pool.write { db in
            try self.applyTransition(db, try self.fetchJob(db, id), to: next, reason: error, error: error)
        }
        changes.signal()
        return job
    }

    /// Atomically takes the oldest queued job and makes it `running`; nil when none is queued.
    public func claimNextQueued() throws -> Job? {
        let job: Job? = try pool.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE state = 'queued' ORDER BY number LIMIT 1") else {
                return nil
            }
            return try self.applyTransition(db, try self.decodeJob(row), to: .running, reason: nil, error: nil)
        }
        if job != nil { changes.signal() }
        return job
    }

    /// At daemon start: every job left `running` (the process died) becomes `interrupted`, then every
    /// `interrupted` job is requeued (`queued`, events for both steps), oldest first, except jobs
    /// with a pending cancel request, which become `cancelled`. Returns the requeued jobs.
    ///
    /// A job found `running` was interrupted by a crash of the daemon or its world; when that has
    /// happened `maxCrashRestarts` times already (0: no limit) the job fails instead, so a job that
    /// kills the world every time (out of memory on a node, say) does not do so forever.
    public func requeueInterrupted(maxCrashRestarts: Int = 0) throws -> [Job] {
        let jobs: [Job] = try pool.write { db in
            let rows = try Row.fetchAll(
                db, sql: "SELECT * FROM jobs WHERE state IN ('running', 'interrupted') ORDER BY number")
            var requeued: [Job] = []
            for row in rows {
                var job = try self.decodeJob(row)
                if job.cancelRequested {
                    _ = try self.applyTransition(db, job, to: .cancelled, reason: "cancel requested before the daemon restarted", error: nil)
                    continue
                }
                if job.state == .running {
                    let crashes = try Int.fetchOne(
                        db, sql: "SELECT COUNT(*) FROM job_events WHERE job_id = ? AND kind = 'state' AND payload LIKE ?",
                        arguments: [job.id, "%\(Self.crashReason)%"]) ?? 0
                    if maxCrashRestarts > 0, crashes >= maxCrashRestarts {
                        let message = "the daemon stopped while this job ran \(crashes + 1) times (a crash or a lost node each time?); "
                            + "not requeued again: look for the cause in the daemon's log, then resubmit"
                        _ = try self.applyTransition(db, job, to: .failed, reason: message, error: message)
                        continue
                    }
                    job = try self.applyTransition(db, job, to: .interrupted, reason: Self.crashReason, error: Self.crashReason)
                }
                requeued.append(try self.applyTransition(db, job, to: .queued, reason: "requeued at daemon start", error: nil))
            }
            return requeued
        }
        changes.signal()
        return jobs
    }

    static let crashReason = "the daemon stopped while the job ran"

    /// Cancels a job: queued or interrupted → `cancelled` at once; running → a cancel request the
    /// trainer sees through `cancelRequested` at its next step boundary (it then moves the job to
    /// `cancelled`); cancelled → nothing. Succeeded or failed jobs: `illegalTransition`.
    @discardableResult
    public func cancel(_ id: String) throws -> (job: Job, outcome: CancelOutcome) {
        let result: (Job, CancelOutcome, Bool) = try pool.write { db in
            let job = try self.fetchJob(db, id)
            switch job.state {
            case .queued, .interrupted:
                return (try self.applyTransition(db, job, to: .cancelled, reason: "cancelled by request", error: nil), .cancelled, true)
            case .running:
                if job.cancelRequested { return (job, .requested, false) }
                let now = Date()
                try db.execute(sql: "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?", arguments: [now, id])
                _ = try self.insertEvent(
                    db, id, .log, ["message": "cancel requested; the job stops at the next step boundary", "level": "info"], at: now)
                return (try self.fetchJob(db, id), .requested, true)
            case .cancelled:
                return (job, .alreadyCancelled, false)
            case .succeeded, .failed:
                throw JobStoreError.illegalTransition(jobID: id, from: job.state, to: .cancelled)
            }
        }
        if result.2 { changes.signal() }
        return (job: result.0, outcome: result.1)
    }

    /// Whether a cancel was requested for this (running) job.
    public func cancelRequested(_ id: String) throws -> Bool {
        try pool.read { db in
            guard let flag = try Bool.fetchOne(db, sql: "SELECT cancel_requested FROM jobs WHERE id = ?", arguments: [id]) else {
                throw JobStoreError.notFound(jobID: id)
            }
            return flag
        }
    }

    // MARK: Internals

    static func encodeSpec(_ spec: JobSpec) throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try e.encode(spec), as: UTF8.self)
    }

    private func applyTransition(_ db: Database, _ job: Job, to next: JobState, reason: String?, error: String?) throws -> Job {
        guard job.state.canTransition(to: next) else {
            throw JobStoreError.illegalTransition(jobID: job.id, from: job.state, to: next)
        }
        let now = Date()
        var sets = ["state = ?", "updated_at = ?"]
        var args: StatementArguments = [next.rawValue, now]
        if next == .running { sets.append("started_at = ?"); args += [now] }
        if next.isTerminal { sets.append("finished_at = ?"); args += [now] }
        // A pending cancel survives an interruption (requeueInterrupted then cancels the job).
        if job.cancelRequested, !(job.state == .running && next == .interrupted) { sets.append("cancel_requested = 0") }
        if let error {
            sets.append("error = ?")
            args += [error]
        } else if next == .queued || next == .running {
            sets.append("error = NULL")
        }
        args += [job.id]
        try db.execute(sql: "UPDATE jobs SET " + sets.joined(separator: ", ") + " WHERE id = ?", arguments: args)
        var payload: [String: JSONValue] = ["from": .string(job.state.rawValue), "to": .string(next.rawValue)]
        if let reason { payload["reason"] = .string(reason) }
        if next == .failed, let error {
            _ = try insertEvent(db, job.id, .error, ["message": .string(error)], at: now)
        }
        _ = try insertEvent(db, job.id, .state, .object(payload), at: now)
        return try fetchJob(db, job.id)
    }

    private func insertEvent(_ db: Database, _ id: String, _ kind: JobEventKind, _ payload: JSONValue, at time: Date) throws -> JobEvent {
        let seq = (try Int.fetchOne(db, sql: "SELECT MAX(seq) FROM job_events WHERE job_id = ?", arguments: [id]) ?? 0) + 1
        try db.execute(
            sql: "INSERT INTO job_events (job_id, seq, time, kind, payload) VALUES (?, ?, ?, ?, ?)",
            arguments: [id, seq, time, kind.rawValue, try payload.jsonText()])
        // Read back so the returned time has the stored (millisecond) precision.
        let row = try Row.fetchOne(db, sql: "SELECT * FROM job_events WHERE job_id = ? AND seq = ?", arguments: [id, seq])!
        return try decodeEvent(row)
    }

    private func requireJob(_ db: Database, _ id: String) throws {
        guard try Bool.fetchOne(db, sql: "SELECT 1 FROM jobs WHERE id = ?", arguments: [id]) != nil else {
            throw JobStoreError.notFound(jobID: id)
        }
    }

    private func fetchJob(_ db: Database, _ id: String) throws -> Job {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE id = ?", arguments: [id]) else {
            throw JobStoreError.notFound(jobID: id)
        }
        return try decodeJob(row)
    }

    private func decodeJob(_ row: Row) throws -> Job {
        let id: String = try row.decode(forColumn: "id")
        let stateText: String = try row.decode(forColumn: "state")
        guard let state = JobState(rawValue: stateText) else { throw JobStoreError.corrupt(jobID: id, detail: "state '\(stateText)'") }
        let specText: String = try row.decode(forColumn: "spec")
        let spec: JobSpec
        do {
            spec = try JSONDecoder().decode(JobSpec.self, from: Data(specText.utf8))
        } catch {
            throw JobStoreError.corrupt(jobID: id, detail: "spec: \(error)")
        }
        return Job(
            id: id,
            number: try row.decode(forColumn: "number"),
            name: try row.decode(forColumn: "name"),
            spec: spec,
            state: state,
            submissionID: try row.decode(forColumn: "submission_id"),
            createdAt: try row.decode(forColumn: "created_at"),
            updatedAt: try row.decode(forColumn: "updated_at"),
            startedAt: try row.decode(forColumn: "started_at"),
            finishedAt: try row.decode(forColumn: "finished_at"),
            step: try row.decode(forColumn: "step"),
            totalSteps: try row.decode(forColumn: "total_steps"),
            lastCheckpointStep: try row.decode(forColumn: "last_checkpoint_step"),
            lastLoss: try row.decode(forColumn: "last_loss"),
            error: try row.decode(forColumn: "error"),
            cancelRequested: try row.decode(forColumn: "cancel_requested"))
    }

    private func decodeEvent(_ row: Row) throws -> JobEvent {
        let id: String = try row.decode(forColumn: "job_id")
        let kindText: String = try row.decode(forColumn: "kind")
        guard let kind = JobEventKind(rawValue: kindText) else { throw JobStoreError.corrupt(jobID: id, detail: "event kind '\(kindText)'") }
        let payloadText: String = try row.decode(forColumn: "payload")
        let payload: JSONValue
        do {
            payload = try JSONValue(jsonText: payloadText)
        } catch {
            throw JobStoreError.corrupt(jobID: id, detail: "event payload: \(error)")
        }
        return JobEvent(jobID: id, seq: try row.decode(forColumn: "seq"), time: try row.decode(forColumn: "time"), kind: kind, payload: payload)
    }
}
