import CDProtocol
import Foundation
import GRDB
import Testing
@testable import CDServer

@Suite("JobStore")
struct JobStoreTests {
    @Test("schema is created in WAL mode and a reopen keeps every job, event and blob reference")
    func schemaAndReopen() async throws {
        try await withTemporaryDirectory { dir in
            let root = dir + "/state"
            var state = try StateDirectory(path: root)
            let sha = try state.blobs.put(data: Data("img".utf8))
            let a = try state.jobs.submit(spec: sampleSpec("a"), blobs: ["1.jpg": sha], submissionID: "sub-a").job
            let b = try state.jobs.submit(spec: sampleSpec("b", steps: 7), blobs: [:], submissionID: nil).job
            try state.jobs.transition(a.id, to: .running)
            try state.jobs.recordProgress(a.id, step: 1, loss: 0.25, learningRate: 1e-5, stepSeconds: 1.5)
            try state.jobs.recordCheckpoint(a.id, step: 1, path: "checkpoints/step-1")
            try state.jobs.log(b.id, "hello")

            let tables = try state.jobs.pool.read { db in
                try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            }
            #expect(tables.contains("jobs") && tables.contains("job_events") && tables.contains("job_blobs"))
            let mode = try state.jobs.pool.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }
            #expect(mode == "wal")

            let jobsBefore = try state.jobs.list()
            let eventsBefore = try [a.id, b.id].map { try state.jobs.events($0) }
            try state.close()

            state = try StateDirectory(path: root)
            defer { try? state.close() }
            #expect(try state.jobs.list() == jobsBefore)
            #expect(try [a.id, b.id].map { try state.jobs.events($0) } == eventsBefore)
            #expect(try state.jobs.jobBlobs(a.id) == ["1.jpg": sha])
            let reopened = try state.jobs.job(a.id)
            #expect(reopened.state == .running && reopened.step == 1 && reopened.lastLoss == 0.25)
            #expect(reopened.lastCheckpointStep == 1 && reopened.spec == sampleSpec("a"))
            #expect(reopened.submissionID == "sub-a" && reopened.totalSteps == 10)
            #expect(try state.jobs.job(b.id).totalSteps == 7)
            // A reopened store keeps numbering and event seqs going.
            let c = try state.jobs.submit(spec: sampleSpec("c"), blobs: [:], submissionID: nil).job
            #expect(c.number == 3)
            #expect(try state.jobs.log(b.id, "again").seq == eventsBefore[1].count + 1)
        }
    }

    @Test("the same submission id gives the same job once; other or no ids give new jobs")
    func idempotentSubmission() async throws {
        try await withStateDirectory { state in
            let store = state.jobs
            let (first, created1) = try store.submit(spec: sampleSpec(), blobs: [:], submissionID: "retry-1")
            let (again, created2) = try store.submit(spec: sampleSpec(), blobs: [:], submissionID: "retry-1")
            #expect(created1 && !created2)
            #expect(again == first)
            #expect(try store.events(first.id).count == 1)
            // Still the same job after it moved on.
            try store.transition(first.id, to: .running)
            let (third, created3) = try store.submit(spec: sampleSpec("other"), blobs: [:], submissionID: "retry-1")
            #expect(!created3 && third.id == first.id && third.state == .running)
            let (other, created4) = try store.submit(spec: sampleSpec(), blobs: [:], submissionID: "retry-2")
            #expect(created4 && other.id != first.id)
            let n1 = try store.submit(spec: sampleSpec(), blobs: [:], submissionID: nil)
            let n2 = try store.submit(spec: sampleSpec(), blobs: [:], submissionID: nil)
            #expect(n1.created && n2.created && n1.job.id != n2.job.id)
            #expect(try store.list().count == 4)
            #expect(throws: JobStoreError.self) { try store.submit(spec: sampleSpec(), blobs: [:], submissionID: "") }
        }
    }

    @Test("the transition table is exactly the documented one")
    func transitionTable() {
        let expected: [JobState: Set<JobState>] = [
            .queued: [.running, .cancelled],
            .running: [.succeeded, .failed, .cancelled, .interrupted],
            .interrupted: [.queued, .cancelled],
            .succeeded: [], .failed: [], .cancelled: [],
        ]
        for s in JobState.allCases { #expect(s.allowedNextStates == expected[s], "\(s)") }
        #expect(JobState.allCases.filter(\.isTerminal) == [.succeeded, .failed, .cancelled])
    }

    @Test("each transition: legal ones apply with a state event, illegal ones throw and change nothing",
          arguments: JobState.allCases, JobState.allCases)
    func transition(from: JobState, to: JobState) async throws {
        try await withStateDirectory { state in
            let store = state.jobs
            let job = try makeJob(store, in: from)
            let eventsBefore = try store.events(job.id)
            if from.canTransition(to: to) {
                let moved = try store.transition(job.id, to: to, error: to == .failed ? "boom" : nil)
                #expect(moved.state == to)
                #expect(try store.job(job.id) == moved)
                let new = try store.events(job.id, after: eventsBefore.last!.seq)
                let stateEvent = try #require(new.last)
                #expect(stateEvent.kind == .state)
                #expect(stateEvent.payload["from"] == .string(from.rawValue))
                #expect(stateEvent.payload["to"] == .string(to.rawValue))
                if to == .failed {
                    #expect(new.map(\.kind) == [.error, .state])
                    #expect(moved.error == "boom")
                } else {
                    #expect(new.count == 1)
                }
            } else {
                #expect(throws: JobStoreError.illegalTransition(jobID: job.id, from: from, to: to)) {
                    try store.transition(job.id, to: to, error: "nope")
                }
                #expect(try store.job(job.id) == job)
                #expect(try store.events(job.id) == eventsBefore)
            }
        }
    }

    @Test("transition side effects: timestamps, error column, cancel flag; unknown ids")
    func transitionSideEffects() async throws {
        try await withStateDirectory { state in
            let store = state.jobs
            let job = try makeJob(store, in: .queued)
            #expect(job.startedAt == nil && job.finishedAt == nil && job.step == 0)
            let running = try store.transition(job.id, to: .running)
            #expect(running.startedAt != nil && running.finishedAt == nil)
            let interrupted = try store.transition(job.id, to: .interrupted, error: "rank 1 died")
            #expect(interrupted.error == "rank 1 died" && interrupted.finishedAt == nil)
            let requeued = try store.transition(job.id, to: .queued)
            #expect(requeued.error == nil)
            try store.transition(job.id, to: .running)
            let failed = try store.transition(job.id, to: .failed, error: "NaN loss at step 3")
            #expect(failed.finishedAt != nil && failed.error == "NaN loss at step 3")
            #expect(try store.events(job.id).last { $0.kind == .error }?.payload["message"] == "NaN loss at step 3")
            #expect(throws: JobStoreError.notFound(jobID: "j-nope")) { try store.transition("j-nope", to: .running) }
            #expect(throws: JobStoreError.notFound(jobID: "j-nope")) { try store.job("j-nope") }
            // A cancel asked for while running survives a graceful stop; the restart then cancels the job.
            let other = try makeJob(store, in: .running, name: "other")
            #expect(try store.cancel(other.id).outcome == .requested)
            #expect(try store.transition(other.id, to: .interrupted).cancelRequested)
            #expect(try store.requeueInterrupted().isEmpty)
            let cancelled = try store.job(other.id)
            #expect(cancelled.state == .cancelled && !cancelled.cancelRequested)

            let message = JobStoreError.illegalTransition(jobID: job.id, from: .failed, to: .queued).description
            #expect(message.contains("failed") && message.contains("queued") && message.contains("finished"))
        }
    }

    @Test("events are numbered 1, 2, … per job and page with after/limit")
    func eventsOrderAndPaging() async throws {
        try await withStateDirectory { state in
            let store = state.jobs
            let a = try makeJob(store, in: .running, name: "a")  // events: submitted, running
            let b = try makeJob(store, in: .running, name: "b")
            for step in 1...24 {
                try store.recordProgress(a.id, step: step, loss: 1.0 / Double(step))
                if step % 3 == 0 { try store.log(b.id, "b at \(step)") }
            }
            let all = try store.events(a.id)
            #expect(all.map(\.seq) == Array(1...26))
            #expect(all.map(\.kind) == [.state, .state] + Array(repeating: .progress, count: 24))
            #expect(all[2...].map { $0.payload["step"]?.intValue } == (1...24).map { $0 })
            #expect(all[2].payload["total_steps"] == 10)
            #expect(zip(all, all.dropFirst()).allSatisfy { $0.time <= $1.time })

            var paged: [JobEvent] = []
            var after = 0
            while true {
                let page = try store.events(a.id, after: after, limit: 10)
                if page.isEmpty { break }
                #expect(page.count <= 10)
                paged += page
                after = page.last!.seq
            }
            #expect(paged == all)
            #expect(try store.events(a.id, after: 20, limit: 3).map(\.seq) == [21, 22, 23])
            #expect(try store.events(a.id, after: 26).isEmpty)
            #expect(try store.lastEventSeq(a.id) == 26)
            #expect(try store.events(b.id).map(\.seq) == Array(1...10))
            #expect(throws: JobStoreError.notFound(jobID: "j-aaaaaaaaaaaa")) { try store.events("j-aaaaaaaaaaaa") }
            #expect(throws: JobStoreError.self) { try store.events(a.id, limit: 0) }
            #expect(throws: JobStoreError.self) { try store.appendEvent(a.id, kind: .state, payload: [:]) }
        }
    }

    @Test("progress and checkpoints update the job; only while running")
    func progressAndCheckpoints() async throws {
        try await withStateDirectory { state in
            let store = state.jobs
            let job = try makeJob(store, in: .queued)
            #expect(throws: JobStoreError.notRunning(jobID: job.id, state: .queued)) {
                try store.recordProgress(job.id, step: 1, loss: 0.5)
            }
            #expect(try store.events(job.id).count == 1)
            try store.transition(job.id, to: .running)
            let e = try store.recordProgress(job.id, step: 3, loss: 0.125, learningRate: 2e-5, stepSeconds: 4.0, extra: ["allreduce_seconds": 0.01])
            #expect(e.payload == ["step": 3, "total_steps": 10, "loss": 0.125, "learning_rate": 2e-5, "step_seconds": 4.0, "allreduce_seconds": 0.01])
            var j = try store.job(job.id)
            #expect(j.step == 3 && j.lastLoss == 0.125)
            let nan = try store.recordProgress(job.id, step: 4, loss: .nan)
            #expect(nan.payload["loss"]?.doubleValue?.isNaN == true)
            j = try store.job(job.id)
            #expect(j.step == 4 && j.lastLoss == nil)
            try store.recordCheckpoint(job.id, step: 4, path: "checkpoints/step-4")
            try store.recordCheckpoint(job.id, step: 8, path: "checkpoints/step-8")
            #expect(try store.job(job.id).lastCheckpointStep == 8)
            #expect(try store.checkpoints(job.id).map(\.step) == [4, 8])
            #expect(try store.checkpoints(job.id).map(\.path) == ["checkpoints/step-4", "checkpoints/step-8"])
            #expect(throws: JobStoreError.self) { try store.recordProgress(job.id, step: -1, loss: nil) }
            try store.transition(job.id, to: .succeeded)
            #expect(throws: JobStoreError.notRunning(jobID: job.id, state: .succeeded)) {
                try store.recordCheckpoint(job.id, step: 9, path: "x")
            }
            // Logs are still accepted after the end.
            try store.log(job.id, "outputs written")
        }
    }

    @Test("nextQueued and claimNextQueued are FIFO by submission")
    func fifo() async throws {
        try await withStateDirectory { state in
            let store = state.jobs
            let jobs = try (0..<3).map { try store.submit(spec: sampleSpec("j\($0)"), blobs: [:], submissionID: nil).job }
            #expect(jobs.map(\.number) == [1, 2, 3])
            #expect(try store.nextQueued()?.id == jobs[0].id)
            #expect(try store.nextQueued()?.id == jobs[0].id)  // reading does not take it
            let claimed = try store.claimNextQueued()
            #expect(claimed?.id == jobs[0].id && claimed?.state == .running)
            #expect(try store.nextQueued()?.id == jobs[1].id)
            try store.cancel(jobs[1].id)
            #expect(try store.claimNextQueued()?.id == jobs[2].id)
            #expect(try store.claimNextQueued() == nil)
            #expect(try store.nextQueued() == nil)
            #expect(try store.list().map(\.id) == jobs.reversed().map(\.id))
            #expect(try store.list(states: [.running]).map(\.id) == [jobs[2].id, jobs[0].id])
            #expect(try store.list(states: [.cancelled, .queued]).map(\.id) == [jobs[1].id])
            #expect(try store.list(states: []).isEmpty)
            #expect(try store.list(limit: 1).map(\.id) == [jobs[2].id])
            let counts = try store.counts()
            #expect(counts[.running] == 2 && counts[.cancelled] == 1 && counts[.queued] == 0)
        }
    }

    @Test("cancel: queued/interrupted at once, running by request, finished jobs refuse")
    func cancelSemantics() async throws {
        try await withStateDirectory { state in
            let store = state.jobs
            let queued = try makeJob(store, in: .queued)
            #expect(try store.cancel(queued.id).outcome == .cancelled)
            #expect(try store.job(queued.id).state == .cancelled)
            #expect(try store.cancel(queued.id).outcome == .alreadyCancelled)

            let running = try makeJob(store, in: .running)
            #expect(try !store.cancelRequested(running.id))
            let (job, outcome) = try store.cancel(running.id)
            #expect(outcome == .requested && job.state == .running && job.cancelRequested)
            #expect(try store.cancelRequested(running.id))
            let eventCount = try store.events(running.id).count
            #expect(try store.cancel(running.id).outcome == .requested)
            #expect(try store.events(running.id).count == eventCount)
            // The trainer sees the flag at a step boundary and stops.
            let cancelled = try store.transition(running.id, to: .cancelled)
            #expect(!cancelled.cancelRequested && cancelled.finishedAt != nil)
            #expect(try !store.cancelRequested(running.id))

            let interrupted = try makeJob(store, in: .interrupted)
            #expect(try store.cancel(interrupted.id).outcome == .cancelled)

            for finished in [JobState.succeeded, .failed] {
                let j = try makeJob(store, in: finished)
                #expect(throws: JobStoreError.illegalTransition(jobID: j.id, from: finished, to: .cancelled)) {
                    try store.cancel(j.id)
                }
                #expect(try store.job(j.id) == j)
            }
            #expect(throws: JobStoreError.notFound(jobID: "j-zzzzzzzzzzzz")) { try store.cancel("j-zzzzzzzzzzzz") }
            #expect(throws: JobStoreError.notFound(jobID: "j-zzzzzzzzzzzz")) { try store.cancelRequested("j-zzzzzzzzzzzz") }
        }
    }

    @Test("after a crash (jobs left running, the store never closed) a restart requeues them")
    func requeueAfterCrash() async throws {
        try await withTemporaryDirectory { dir in
            let blobs = try BlobStore(directory: dir + "/blobs", temporaryDirectory: dir + "/tmp")
            let path = dir + "/cdtrainerd.sqlite"
            let before = try JobStore(path: path, blobs: blobs)
            let running = try makeJob(before, in: .running, name: "running")
            try before.recordProgress(running.id, step: 7, loss: 0.3)
            try before.recordCheckpoint(running.id, step: 5, path: "checkpoints/step-5")
            let interrupted = try makeJob(before, in: .interrupted, name: "interrupted")
            let queued = try makeJob(before, in: .queued, name: "queued")
            let doomed = try makeJob(before, in: .running, name: "doomed")
            try before.cancel(doomed.id)
            let done = try makeJob(before, in: .succeeded, name: "done")
            // "kill -9": `before` is abandoned, not closed; a new process opens the same file.

            let after = try JobStore(path: path, blobs: blobs)
            let requeued = try after.requeueInterrupted()
            #expect(requeued.map(\.id) == [running.id, interrupted.id])
            #expect(requeued.allSatisfy { $0.state == .queued && $0.error == nil })
            let r = try after.job(running.id)
            #expect(r.lastCheckpointStep == 5 && r.step == 7)
            let tail = try after.events(running.id).suffix(2)
            #expect(tail.map { $0.payload["to"] } == ["interrupted", "queued"])
            #expect(try after.events(interrupted.id).last?.payload["from"] == "interrupted")
            #expect(try after.job(doomed.id).state == .cancelled)
            #expect(try after.job(queued.id).state == .queued)
            #expect(try after.job(done.id).state == .succeeded)
            // The resumed job goes first: it was submitted first.
            #expect(try after.nextQueued()?.id == running.id)
            #expect(try after.requeueInterrupted().isEmpty)
            try after.close()
            try before.close()
        }
    }

    @Test("a job that was running at every one of too many crashes fails instead of being requeued again")
    func crashLoopingJobFails() async throws {
        try await withTemporaryDirectory { dir in
            let blobs = try BlobStore(directory: dir + "/blobs", temporaryDirectory: dir + "/tmp")
            let store = try JobStore(path: dir + "/cdtrainerd.sqlite", blobs: blobs)
            let job = try makeJob(store, in: .running, name: "oom")
            let graceful = try makeJob(store, in: .running, name: "stopped")
            for round in 1...3 {
                _ = try store.transition(graceful.id, to: .interrupted, error: "stopped by a signal")  // not a crash
                let requeued = try store.requeueInterrupted(maxCrashRestarts: 2)
                if round <= 2 {
                    #expect(requeued.map(\.id).contains(job.id), "crash \(round) of a limit of 2: requeued")
                } else {
                    #expect(!requeued.map(\.id).contains(job.id))
                    let failed = try store.job(job.id)
                    #expect(failed.state == .failed && failed.error?.contains("3 times") == true, "\(failed.error ?? "")")
                }
                #expect(requeued.map(\.id).contains(graceful.id), "graceful stops do not count")
                if round <= 2 { _ = try store.transition(job.id, to: .running) }
                _ = try store.transition(graceful.id, to: .running)
            }
            try store.close()
        }
    }

    @Test("a submission referencing missing blobs or bad names fails whole and stores nothing")
    func missingBlobLeavesStoreUnchanged() async throws {
        try await withStateDirectory { state in
            let store = state.jobs
            let present = try state.blobs.put(data: Data("present".utf8))
            let absent1 = String(repeating: "a", count: 64)
            let absent2 = String(repeating: "b", count: 64)
            let refs = ["1.jpg": present, "2.jpg": absent1, "3.png": absent2]
            #expect(throws: JobStoreError.missingBlobs([
                BlobReference(fileName: "2.jpg", sha256: absent1), BlobReference(fileName: "3.png", sha256: absent2),
            ])) {
                try store.submit(spec: sampleSpec(), blobs: refs, submissionID: "s-1")
            }
            let message = JobStoreError.missingBlobs([BlobReference(fileName: "2.jpg", sha256: absent1)]).description
            #expect(message.contains("2.jpg") && message.contains(absent1))
            #expect(try store.list().isEmpty)
            #expect(try store.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM job_events") } == 0)
            #expect(try store.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM job_blobs") } == 0)

            for (name, sha) in [("../1.jpg", present), ("a/b.jpg", present), (".x.jpg", present), ("run.sh", present),
                                ("1.jpg", "../../etc/passwd"), ("1.jpg", present.uppercased())] {
                #expect(throws: JobStoreError.self) { try store.submit(spec: sampleSpec(), blobs: [name: sha], submissionID: "s-1") }
            }
            #expect(try store.list().isEmpty)

            // The failed attempts reserved nothing: the same submission id works once the blobs exist.
            try state.blobs.put(data: Data(repeating: 0xaa, count: 1))  // some other blob
            let fixed = ["1.jpg": present]
            let (job, created) = try store.submit(spec: sampleSpec(), blobs: fixed, submissionID: "s-1")
            #expect(created && job.number == 1)
            #expect(try store.jobBlobs(job.id) == fixed)
        }
    }

    @Test("readers run concurrently with a writer and always see consistent snapshots")
    func concurrentReadersWhileWriting() async throws {
        try await withStateDirectory { state in
            let store = state.jobs
            let job = try makeJob(store, in: .running)
            let steps = 150
            try await withThrowingTaskGroup(of: Int.self) { group in
                group.addTask {
                    for step in 1...steps { try store.recordProgress(job.id, step: step, loss: Double(step)) }
                    return steps
                }
                for _ in 0..<4 {
                    group.addTask {
                        var reads = 0
                        var lastStep = 0
                        while lastStep < steps {
                            let j = try store.job(job.id)
                            #expect(j.step >= lastStep)  // never goes back
                            lastStep = j.step
                            let events = try store.events(job.id)
                            #expect(events.map(\.seq) == Array(1...events.count))  // no gaps, no half-written rows
                            #expect(events.count >= 2 + lastStep)
                            _ = try store.list(states: [.running])
                            reads += 1
                            await Task.yield()
                        }
                        return reads
                    }
                }
                // WAL: a read transaction keeps its snapshot while the writer commits.
                group.addTask {
                    var stable = 0
                    for _ in 0..<5 {
                        let same = try store.pool.read { db -> Bool in
                            let sql = "SELECT COUNT(*) FROM job_events"
                            let a = try Int.fetchOne(db, sql: sql)
                            Thread.sleep(forTimeInterval: 0.01)
                            return try Int.fetchOne(db, sql: sql) == a
                        }
                        #expect(same)
                        stable += 1
                    }
                    return stable
                }
                var total = 0
                for try await n in group { total += n }
                #expect(total > steps)
            }
            #expect(try store.events(job.id).count == 2 + steps)
            #expect(try store.job(job.id).step == steps)
        }
    }

    @Test("waitForEvents returns new events as soon as they are written, [] on timeout")
    func waitForEvents() async throws {
        try await withStateDirectory { state in
            let store = state.jobs
            let job = try makeJob(store, in: .running)
            let last = try store.lastEventSeq(job.id)
            let start = ContinuousClock.now
            #expect(try await store.waitForEvents(job.id, after: last, timeout: .milliseconds(150)).isEmpty)
            #expect(ContinuousClock.now - start >= .milliseconds(140))

            let waiter = Task { try await store.waitForEvents(job.id, after: last, timeout: .seconds(30)) }
            try await Task.sleep(for: .milliseconds(100))
            let t0 = ContinuousClock.now
            try store.recordProgress(job.id, step: 1, loss: 0.5)
            let got = try await waiter.value
            #expect(got.map(\.seq) == [last + 1])
            #expect(ContinuousClock.now - t0 < .seconds(5))
            // Already there: no waiting.
            #expect(try await store.waitForEvents(job.id, after: 0, timeout: .seconds(30)).count == last + 1)
            // Cancellation ends the wait.
            let cancelled = Task { try await store.waitForEvents(job.id, after: last + 1, timeout: .seconds(30)) }
            try await Task.sleep(for: .milliseconds(50))
            cancelled.cancel()
            #expect(try await cancelled.value.isEmpty)
        }
    }

    @Test("job ids: j- and 12 base32 characters, random, validated")
    func jobIDs() {
        let ids = (0..<2000).map { _ in JobID.random() }
        #expect(Set(ids).count == ids.count)
        #expect(ids.allSatisfy(JobID.isValid))
        for bad in ["", "j-", "j-abc", "j-ABCDEFGHIJKL", "j-abcdefghijk1", "x-abcdefghijkl", "j-abcdefghijklm", "../../etc/passwd", "j-abcdefghij/."] {
            #expect(!JobID.isValid(bad), "\(bad)")
        }
    }

    @Test("job and event JSON uses snake_case keys and embeds payloads")
    func jsonCoding() async throws {
        try await withStateDirectory { state in
            let job = try makeJob(state.jobs, in: .running)
            let e = try state.jobs.recordProgress(job.id, step: 2, loss: 0.5)
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            let text = String(decoding: try encoder.encode(e), as: UTF8.self)
            #expect(text.contains("\"job_id\"") && text.contains("\"payload\":{\"loss\":0.5,\"step\":2,\"total_steps\":10}"))
            let jobText = String(decoding: try encoder.encode(try state.jobs.job(job.id)), as: UTF8.self)
            #expect(jobText.contains("\"total_steps\":10") && jobText.contains("\"batch_size\""))
            let decoder = JSONDecoder()
            #expect(try decoder.decode(JobEvent.self, from: try encoder.encode(e)) == e)
            #expect(try decoder.decode(Job.self, from: try encoder.encode(try state.jobs.job(job.id))) == (try state.jobs.job(job.id)))
            let v: JSONValue = ["a": [1, 2.5, "x", true, nil], "b": ["c": false]]
            #expect(try JSONValue(jsonText: try v.jsonText()) == v)
        }
    }
}
