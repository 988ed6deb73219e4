import ArgumentParser
import CDDaemon
import CDDistributed
import CDDistributedMPI
import CDProtocol
import CDTraining
import Foundation

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run one Custom Diffusion job (a TOML job file): checkpoints, samples, log and outputs in --out.",
        discussion: """
            Under `mpirun -n N` the N processes train the job data-parallel: each takes its share of \
            every global batch, the gradients are summed with one MPI allreduce per step, and rank 0 \
            alone writes files and prints progress. Give every rank the same job file and --out \
            (rank 0's generated class images must be readable by all ranks at that path). Use \
            `--bind-to none`: OpenMPI otherwise pins each rank to one core. Ranks sharing a node \
            split its cores unless CD_NUM_THREADS is set. SIGINT, SIGTERM or SIGUSR1 stop the run at \
            the next step boundary with a checkpoint; `--resume` continues from it.
            """)

    @Argument(help: "The job file (TOML).")
    var job: String

    @Option(help: "Output folder (created if missing).")
    var out: String

    @Flag(help: "Continue from the newest complete checkpoint in --out.")
    var resume = false

    func run() throws {
        let signals = StopSignals()
        let (mpi, world) = try MPIWorld.join()
        defer { mpi?.finalize() }
        var outcome = JobRunner.Outcome.completed
        do {
            let spec = try JobSpec.load(path: job)
            let runner = JobRunner(spec: spec, outputDirectory: URL(fileURLWithPath: out, isDirectory: true), communicator: world) { line in
                FileHandle.standardError.write(Data((line + "\n").utf8))
            }
            runner.decide = { signals.received != nil ? .stop : .proceed }
            let summary = try runner.run(resume: resume)
            for path in summary.outputs { print(path) }
            outcome = summary.outcome
        } catch {
            // One rank's failure (a checkpoint that cannot be written, an unreadable image) leaves
            // the others waiting in a collective: end the whole world.
            if let mpi, mpi.size > 1 {
                FileHandle.standardError.write(Data("cdtrainerd run (rank \(mpi.rank) of \(mpi.size)): error: \(error)\n".utf8))
                mpi.abort(code: 1)
            }
            throw error
        }
        if case let .stopped(step) = outcome {
            FileHandle.standardError.write(Data("stopped at step \(step) by \(StopSignals.name(signals.received ?? SIGTERM)); continue with --resume\n".utf8))
            throw ExitCode(130)
        }
    }
}
