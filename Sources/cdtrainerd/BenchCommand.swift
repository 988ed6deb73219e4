import ArgumentParser
import CDTensor
import Foundation

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Performance benchmarks (run them from a release build).",
        subcommands: [KernelsCommand.self, UNetCommand.self, TrainCommand.self, LoadCommand.self])
}

/// One JSON object with snake_case keys on stdout.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.keyEncodingStrategy = .convertToSnakeCase
    encoder.outputFormatting = [.sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Benchmarks from a debug build say nothing about performance.
func warnIfDebugBuild() {
    #if DEBUG
    FileHandle.standardError.write(Data("warning: debug build; figures are meaningless. Use `swift build -c release`.\n".utf8))
    #endif
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

    @Option(help: "Arithmetic of convolutions and frozen-weight matmuls: fp32, or bf16 inputs and weights with fp32 accumulation (CPUs with AVX512_BF16).")
    var precision: ComputePrecision = .fp32

    func validate() throws {
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1") }
    }

    func run() throws {
        warnIfDebugBuild()
        _ = ThreadPool.shared  // starts the thread team before anything is timed
        try ComputePrecision.select(precision)
        let report = KernelBenchmark(repeats: repeats, only: only).run { line in
            if !json { FileHandle.standardError.write(Data((line + "\n").utf8)) }
        }
        if json {
            try printJSON(report)
        } else {
            print(report.table)
        }
    }
}

struct UNetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unet",
        abstract: "Forward time of an SD1.5-size UNet (random weights) against the sgemm throughput measured in the same run.")

    @Option(help: "Image resolution in pixels (latents are 1/8).")
    var res = 512

    @Option(help: "Batch size.")
    var batch = 1

    @Option(help: "Timed runs after a warm-up (the best is reported).")
    var repeats = 3

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        guard res > 0, res % 64 == 0 else { throw ValidationError("--res must be a positive multiple of 64") }
        guard batch >= 1, repeats >= 1 else { throw ValidationError("--batch and --repeats must be at least 1") }
    }

    func run() throws {
        warnIfDebugBuild()
        _ = ThreadPool.shared
        let report = try UNetBenchmark(resolution: res, batch: batch, repeats: repeats).run { line in
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
        if json {
            try printJSON(report)
        } else {
            print(String(format: "UNet forward %dx%d, batch %d: %.3f s, %.1f GFLOP (conv %.1f, matmul %.1f, attention %.1f), %.1f GFLOP/s = %.2f x sgemm (%.1f GFLOP/s), peak RSS %.2f GB, %d threads",
                         report.resolution, report.resolution, report.batch, report.seconds, report.gflop,
                         (report.flopsByKind["conv"] ?? 0) / 1e9, (report.flopsByKind["matmul"] ?? 0) / 1e9, (report.flopsByKind["attention"] ?? 0) / 1e9,
                         report.gflops, report.ratioToSgemm, report.sgemmGflops, Double(report.peakRssBytes) / 1e9, report.threads))
        }
    }
}
