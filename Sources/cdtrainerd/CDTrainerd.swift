import ArgumentParser

@main
struct CDTrainerd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cdtrainerd",
        abstract: "Custom Diffusion training daemon for CPU clusters (oneDNN/OpenBLAS numerics, MPI data parallelism).",
        subcommands: [ServeCommand.self, RunCommand.self, MergeCommand.self, CompressCommand.self, SampleCommand.self, BenchCommand.self, VersionCommand.self])
}
