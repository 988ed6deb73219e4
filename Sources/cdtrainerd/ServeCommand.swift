import ArgumentParser
import CDDaemon
import CDDistributed
import CDDistributedMPI
import CDProtocol
import CDServer
import Dispatch
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the training daemon: rank 0 serves the HTTP API and keeps the job store; every rank trains.",
        discussion: """
            Start it under mpirun, one process per node: `mpirun -n 1 --bind-to none cdtrainerd serve --config FILE` \
            on one machine, `mpirun --hostfile HOSTS --map-by ppr:1:node --bind-to none …` on a cluster (plain \
            `cdtrainerd serve` is a world of one). SIGUSR1, SIGTERM or SIGINT: the running job checkpoints at its \
            next step boundary, is marked interrupted, and the world exits 0; at the next start it is requeued and \
            resumes from that checkpoint. The token comes from CDTRAINERD_TOKEN or the configuration's token_file.
            """)

    @Option(help: "The configuration file (see configs/cdtrainerd.toml); without it every key has its default.")
    var config: String?

    @Option(help: "Overrides [server] port (0: any free port, printed at start).")
    var port: Int?

    @Option(name: .customLong("state-dir"), help: "Overrides [state] dir.")
    var stateDir: String?

    @Option(name: .customLong("work-dir"), help: "Overrides [state] work_dir.")
    var workDir: String?

    @Option(name: .customLong("model"), help: "Adds NAME=PATH to [models] (repeatable).")
    var models: [String] = []

    /// Exit status for a configuration the daemon cannot start with (sysexits' EX_CONFIG): the
    /// systemd units do not restart on it (`RestartPreventExitStatus=78`).
    static let configurationExit: Int32 = 78

    func run() throws {
        let signals = StopSignals()
        let settings: DaemonConfig
        do {
            settings = try self.settings()
        } catch {
            FileHandle.standardError.write(Data("cdtrainerd serve: \(error)\n".utf8))
            throw ExitCode(Self.configurationExit)
        }
        let (mpi, world) = try MPIWorld.join()
        defer { mpi?.finalize() }
        let rank = world.rank
        let log: @Sendable (String) -> Void = { line in
            FileHandle.standardError.write(Data("cdtrainerd[\(rank)]: \(line)\n".utf8))
        }
        let metrics = DaemonMetrics(worldSize: world.size)
        do {
            if world.isLead {
                try serveLead(settings, world: world, signals: signals, metrics: metrics, log: log)
            } else {
                try Daemon(world: world, config: settings, state: nil, signals: signals, metrics: metrics, log: log).run()
            }
            log("stopped")
        } catch {
            // The world is broken, or rank 0 could not start: end every rank; the supervisor restarts
            // the world unless the configuration is at fault.
            log("error: \(error)")
            let code = error is ServerConfigError || error is ConfigurationError ? Self.configurationExit : 1
            if let mpi, mpi.size > 1 { mpi.abort(code: code) }
            throw ExitCode(code)
        }
    }

    /// The configuration file with the command line's overrides.
    func settings() throws -> DaemonConfig {
        var settings = try config.map { try DaemonConfig.load(path: $0) } ?? DaemonConfig()
        if let port { settings.port = port }
        if let stateDir { settings.stateDirectory = URL(fileURLWithPath: stateDir).standardizedFileURL.path }
        if let workDir { settings.workDirectory = URL(fileURLWithPath: workDir).standardizedFileURL.path }
        for entry in models {
            guard let eq = entry.firstIndex(of: "="), eq != entry.startIndex, entry.index(after: eq) != entry.endIndex else {
                throw ConfigurationError(message: "--model expects NAME=PATH (got '\(entry)')")
            }
            settings.models[String(entry[..<eq])] = URL(fileURLWithPath: String(entry[entry.index(after: eq)...])).standardizedFileURL.path
        }
        return settings
    }

    struct ConfigurationError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    /// Rank 0: the state directory, the API on the cooperative thread pool, the daemon loop here.
    private func serveLead(_ settings: DaemonConfig, world: Communicator, signals: StopSignals,
                           metrics: DaemonMetrics, log: @escaping @Sendable (String) -> Void) throws {
        // Only rank 0 serves, so only its node needs the token.
        let token = try Self.token(settings)
        let state = try StateDirectory(path: settings.stateDirectory, maxBlobSize: settings.maxUploadMiB << 20)
        defer { try? state.close() }
        let server = ServerConfig(host: settings.host, port: settings.port, token: token, maxBlobBodySize: settings.maxUploadMiB << 20)
        let sampler = CheckpointSampler(config: settings)
        let admission = JobAdmission(config: settings)
        let services = APIServices(
            admit: { spec, names in try admission.admit(&spec, blobNames: names) },
            sample: { job, folder, request in try await sampler.sample(job: job, checkpointFolder: folder, request: request) },
            merge: { jobs, request in try await sampler.merge(jobs: jobs, request: request) },
            metrics: { metrics.prometheus() }, worldSize: world.size)
        var logger = Logger(label: "cdtrainerd.api")
        logger.logLevel = Logger.Level(rawValue: settings.logLevel) ?? .info
        let ranks = world.size
        let app = try APIServer.application(state: state, config: server, logger: logger, services: services) { channel in
            let port = channel.localAddress?.port ?? settings.port
            log("API listening on http://\(settings.host):\(port) (\(ranks) rank\(ranks == 1 ? "" : "s"), state \(state.root)\(token == nil ? ", no token" : ""))")
        }
        // The API runs until the daemon loop returns; its own signal handling is off (StopSignals owns them).
        // If it cannot run (the port is taken), the daemon stops as after a signal and exits non-zero.
        let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
        let serverDone = DispatchSemaphore(value: 0)
        let serverFailure = ServerFailure()
        Task {
            defer { serverDone.signal() }
            do {
                try await group.run()
            } catch {
                serverFailure.set("the API server failed: \(error)")
                signals.trigger(SIGTERM)
            }
        }
        // Requests in flight (a long sample) get a bounded grace period: past it the process exits
        // (and, after a failure, aborts the world) without them.
        defer {
            Task { await group.triggerGracefulShutdown() }
            if serverDone.wait(timeout: .now() + 30) == .timedOut { log("API requests still running after 30 s: not waiting for them") }
        }
        try Daemon(world: world, config: settings, state: state, signals: signals, metrics: metrics, log: log).run()
        if let failure = serverFailure.message { throw ValidationError(failure) }
    }

    /// Written by the server task, read by the daemon thread.
    final class ServerFailure: @unchecked Sendable {
        private let lock = NSLock()
        private var text: String?
        func set(_ message: String) { lock.withLock { text = text ?? message } }
        var message: String? { lock.withLock { text } }
    }

    /// CDTRAINERD_TOKEN, else the token file's first line; nil when neither is set.
    static func token(_ settings: DaemonConfig) throws -> String? {
        if let t = ProcessInfo.processInfo.environment["CDTRAINERD_TOKEN"], !t.isEmpty { return t }
        guard let file = settings.tokenFile else { return nil }
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw ConfigurationError(message: "token_file \(file): cannot read it (\(error.localizedDescription)); deploy/install.sh creates it")
        }
        let token = text.split(whereSeparator: \.isNewline).first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        guard !token.isEmpty else { throw ConfigurationError(message: "token_file \(file) is empty") }
        return token
    }
}
