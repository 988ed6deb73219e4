import ArgumentParser

struct CheckpointCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ckpt",
        abstract: "List and download a job's checkpoints.",
        subcommands: [CheckpointListCommand.self, CheckpointGetCommand.self])
}
