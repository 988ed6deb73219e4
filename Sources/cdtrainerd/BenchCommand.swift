import ArgumentParser
import CDTensor
import Foundation

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Performance benchmarks (run them from a release build).",
        subcommands: [KernelsCommand.self])
}

struct KernelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "Time each kernel at Stable Diffusion 1.5 sizes against the sgemm throughput and memory bandwidth measured in the same run.")

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @Option(help: "Timed repetitions per kernel (the best is reported).")
    var repeats = 3

    @Option(help: "Only kernels whose name contains this text (e.g. attention).")
    var only: String?

    func validate() throws {
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1") }
    }

    func run() throws {
        #if DEBUG
        FileHandle.standardError.write(Data("warning: debug build; figures are meaningless. Use `swift build -c release`.\n".utf8))
        #endif
        _ = ThreadPool.shared  // also sets OpenBLAS's thread count
        let report = KernelBenchmark(repeats: repeats, only: only).run { line in
            if !json { FileHandle.standardError.write(Data((line + "\n").utf8)) }
        }
        if json {
            let encoder = JSONEncoder()
            encoder.keyEncodingStrategy = .convertToSnakeCase
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(report.table)
        }
    }
}
