import ArgumentParser
import CDTensor
import CMPI

/// Prints what this binary runs on: thread counts, the GEMM, LAPACK and MPI libraries it loaded,
/// and whether the CPU has bf16 arithmetic.
struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "version", abstract: "Show the build and the numeric/MPI libraries in use.")

    func run() {
        print("cdtrainerd \(CDTrainerdVersion.string)")
        print("threads: \(ThreadPool.shared.threadCount) (CD_NUM_THREADS overrides)")
        print("GEMM: \(BLAS.gemmLibrary); LAPACK: \(BLAS.config) (kernel \(BLAS.coreName))")
        print("bf16 compute (compute_precision = \"bf16\"): " + (ComputePrecision.bf16Supported ? "available (AVX512_BF16)" : "not available on this CPU"))
        // MPI_Get_library_version may be called before MPI_Init.
        var buffer = [CChar](repeating: 0, count: Int(cmpi_max_library_version_string()) + 1)
        var length: Int32 = 0
        if MPI_Get_library_version(&buffer, &length) == MPI_SUCCESS {
            let text = String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            print("MPI: \(text.split(separator: "\n").first.map(String.init) ?? text)")
        }
    }
}

enum CDTrainerdVersion {
    static let string = "0.1.0"
}
