import CDDistributed
import CDProtocol
import CDServer
import CDTraining
import Foundation

/// The loop every rank of `cdtrainerd serve` runs on the thread that owns MPI.
///
/// Rank 0 holds the state directory: it requeues the jobs a previous world left running, then
/// claims queued jobs one at a time and sends each to all ranks (`DaemonCommand`), with the job's
/// images, so the other nodes need no shared file system. The other ranks wait for the next
/// command in `idleBroadcast` (sleeping, not spinning). Every rank runs the job's `JobRunner`;
/// rank 0 records progress, checkpoints and the outcome in the store and decides at each step
/// boundary whether to go on, stop (a stop signal: checkpoint, job `interrupted`, world exits)
/// or cancel (requested through the API). A job's own failure fails that job only; a failure of
/// the world itself (MPI) ends `run` with the job left `running`, to be requeued at restart.
public final class Daemon: @unchecked Sendable {
    public let world: Communicator
    public let config: DaemonConfig
    /// Rank 0's; nil on the other ranks.
    public let state: StateDirectory?
    public let signals: StopSignals
    public let metrics: DaemonMetrics
    let log: (String) -> Void
    /// How long an idle rank sleeps between checks for a command.
    var pollInterval = 0.05

    public init(world: Communicator, config: DaemonConfig, state: StateDirectory?, signals: StopSignals,
                metrics: DaemonMetrics, log: @escaping (String) -> Void) {
        precondition((state != nil) == world.isLead, "rank 0, and only rank 0, has the state directory")
        self.world = world
        self.config = config
        self.state = state
        self.signals = signals
        self.metrics = metrics
        self.log = log
    }

    /// Returns after a stop signal (on rank 0) ended the world's work; throws for a failure of
    /// the world (a collective failing), which the supervisor answers with a restart.
    public func run() throws {
        if let state {
            for job in try state.jobs.requeueInterrupted(maxCrashRestarts: config.maxCrashRestarts) {
                log("requeued \(job.id) (\(job.name)) at step \(job.step); it resumes from its last checkpoint")
            }
        }
        while true {
            var message = try world.isLead ? nextCommand().encoded() : []
            try world.idleBroadcast(bytes: &message, root: 0, pollInterval: pollInterval)
            switch try DaemonCommand(decoding: message) {
            case .shutdown:
                return
            case let .job(order, files):
                try run(order, files: files)
            }
        }
    }

    // MARK: - Rank 0: what next

    /// Waits for a queued job (or a stop signal), claims it and packs it for every rank. A job
    /// that cannot even be prepared (its blobs gone, its model removed from the configuration)
    /// fails here without bothering the other ranks.
    func nextCommand() throws -> DaemonCommand {
        guard let state else { return .shutdown }
        while true {
            if let s = signals.received {
                log("\(StopSignals.name(s)): shutting down")
                return .shutdown
            }
            if let job = try state.jobs.claimNextQueued() {
                do {
                    return try prepare(job, state: state)
                } catch {
                    log("job \(job.id) failed before training: \(error)")
                    _ = try? state.jobs.appendEvent(job.id, kind: .error, payload: .object(["message": .string("\(error)")]))
                    _ = try state.jobs.transition(job.id, to: .failed, error: "\(error)")
                    continue
                }
            }
            signals.wait(seconds: 0.25)
        }
    }

    /// Writes the job's images into its folder and packs them for the other ranks.
    func prepare(_ job: Job, state: StateDirectory) throws -> DaemonCommand {
        var spec = job.spec
        guard let model = config.modelPath(spec.model) else {
            throw DaemonError.unknownModel(spec.model, known: config.models.keys.sorted())
        }
        spec.model = model
        let folder = try state.createJobDirectory(job.id)
        let blobs = try state.jobs.jobBlobs(job.id)
        var byFolder: [String: [String: String]] = [:]
        for (name, sha) in blobs {
            guard let sub = JobUpload.folder(of: name) else { throw JobStoreError.invalidArgument("stored file name '\(name)' has no folder") }
            byFolder[sub, default: [:]][name] = sha
        }
        var files = FilePackage()
        for (sub, entries) in byFolder.sorted(by: { $0.key < $1.key }) {
            try state.blobs.materialize(jobID: job.id, blobs: entries, into: folder + "/" + sub)
            if world.size > 1 {
                for name in entries.keys.sorted() {
                    files.entries.append((sub + "/" + name, try Data(contentsOf: URL(fileURLWithPath: folder + "/" + sub + "/" + name))))
                }
            }
        }
        log("job \(job.id) (\(job.name)): \(job.step > 0 ? "resuming" : "starting"), \(blobs.count) files")
        return .job(JobOrder(jobID: job.id, spec: spec), files)
    }

    // MARK: - Every rank: one job

    /// The job's folder on this rank: rank 0's in the state directory, the others' in the work folder.
    func jobFolder(_ id: String) throws -> String {
        if let state { return try state.jobDirectory(id) }
        return config.resolvedWorkDirectory + "/rank-\(world.rank)/jobs/" + id
    }

    func run(_ order: JobOrder, files: FilePackage) throws {
        let id = order.jobID
        let folder = try jobFolder(id)
        // The other ranks' copy of the job is scratch: rank 0 sends it again when the job resumes.
        defer { if !world.isLead { try? FileManager.default.removeItem(atPath: folder) } }
        var spec = order.spec
        do {
            if !world.isLead { try files.write(under: folder) }
            for (i, c) in spec.concepts.enumerated() where c.classImages != nil {
                try FileManager.default.createDirectory(atPath: folder + "/" + JobUpload.classFolder(i), withIntermediateDirectories: true)
            }
        } catch {
            // Before the runner's first collective: it finds the missing files and fails on every rank together.
            log("job \(id): cannot write its files on rank \(world.rank): \(error)")
        }
        spec = JobUpload.resolve(spec, jobFolder: folder)
        // Rank 0's lines go to the daemon's log and, but for the per-step lines (progress events
        // carry those), to the job's events.
        let store = state?.jobs
        let runner = JobRunner(spec: spec, outputDirectory: URL(fileURLWithPath: folder + "/run", isDirectory: true),
                               communicator: world) { [log] line in
            log("\(id): \(line)")
            if let store, !line.hasPrefix("step ") { _ = try? store.log(id, line) }
        }
        if let state { attach(runner, job: id, state: state) }
        metrics.setRunning(true)
        defer { metrics.setRunning(false) }
        do {
            let summary = try runner.run(resume: true)
            guard let state else { return }
            switch summary.outcome {
            case .completed:
                _ = try state.jobs.transition(id, to: .succeeded)
                log("job \(id) succeeded")
            case let .stopped(step):
                _ = try state.jobs.transition(id, to: .interrupted, error: "the daemon stopped at step \(step) (checkpoint written); the job resumes when it restarts")
            case let .cancelled(step):
                _ = try state.jobs.transition(id, to: .cancelled)
                log("job \(id) cancelled at step \(step)")
            }
        } catch let e as CommunicatorError {
            throw e
        } catch {
            log("job \(id) failed: \(error)")
            guard let state else { return }
            _ = try? state.jobs.appendEvent(id, kind: .error, payload: .object(["message": .string("\(error)")]))
            _ = try state.jobs.transition(id, to: .failed, error: "\(error)")
        }
    }

    /// Rank 0's side of a running job: its decisions and records.
    func attach(_ runner: JobRunner, job id: String, state: StateDirectory) {
        let signals = self.signals, metrics = self.metrics, keep = config.keepCheckpoints, log = self.log
        runner.decide = {
            if signals.received != nil { return .stop }
            return ((try? state.jobs.cancelRequested(id)) ?? false) ? .cancel : .proceed
        }
        runner.observe = { event in
            do {
                switch event {
                case let .progress(report, allreduceSeconds):
                    metrics.recordStep(seconds: report.seconds, loss: report.losses.loss, allreduceSeconds: allreduceSeconds)
                    var extra: [String: JSONValue] = [
                        "instance_loss": .double(report.losses.instance), "grad_norm": .double(report.update.gradientNorm),
                        "embedding_learning_rate": .double(report.update.embeddingLearningRate),
                        "allreduce_seconds": .double(allreduceSeconds),
                    ]
                    if let p = report.losses.prior { extra["prior_loss"] = .double(p) }
                    _ = try state.jobs.recordProgress(id, step: report.step, loss: report.losses.loss,
                                                      learningRate: report.update.learningRate, stepSeconds: report.seconds, extra: extra)
                case let .checkpoint(step, folder):
                    metrics.recordCheckpoint()
                    _ = try state.jobs.recordCheckpoint(id, step: step, path: folder.path)
                    Self.prune(folder.deletingLastPathComponent(), keep: keep)
                case let .samples(step, file):
                    _ = try state.jobs.log(id, "validation samples at step \(step): \(file.lastPathComponent)")
                }
            } catch {
                log("job \(id): cannot record \(event): \(error)")
            }
        }
    }

    /// Keeps the newest `keep` checkpoint folders (all when 0).
    static func prune(_ checkpoints: URL, keep: Int) {
        guard keep > 0 else { return }
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: checkpoints.path)) ?? []).filter { $0.hasPrefix("step-") }.sorted()
        for name in names.dropLast(keep) {
            try? FileManager.default.removeItem(at: checkpoints.appendingPathComponent(name))
        }
    }
}
