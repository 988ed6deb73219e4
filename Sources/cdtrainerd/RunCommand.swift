import ArgumentParser
import CDProtocol
import CDTraining
import Foundation

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run one Custom Diffusion job (a TOML job file) in this process: checkpoints, samples, log and outputs in --out.")

    @Argument(help: "The job file (TOML).")
    var job: String

    @Option(help: "Output folder (created if missing).")
    var out: String

    @Flag(help: "Continue from the newest complete checkpoint in --out.")
    var resume = false

    func run() throws {
        let spec = try JobSpec.load(path: job)
        let runner = JobRunner(spec: spec, outputDirectory: URL(fileURLWithPath: out, isDirectory: true)) { line in
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
        let summary = try runner.run(resume: resume)
        for path in summary.outputs { print(path) }
    }
}
