import CDNNL
import COpenBLAS

/// Row-major GEMM, thread counts, and the naive reference it is tested against.
///
/// `gemm` runs on oneDNN's `dnnl_sgemm`: on the shapes a UNet step makes (attention products with an
/// inner size of 40–160 from inside pool tasks, linear layers with M = 64…4096) it measured 0–50 %
/// faster than OpenBLAS 0.3.21 on this project's machines (BENCHMARKS.md). OpenBLAS stays for LAPACK.
public enum BLAS {
    /// Sets OpenBLAS's thread count, which only its LAPACK routines (`LAPACK`) use (normally
    /// `ThreadPool.shared.threadCount`).
    public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }
    public static var config: String { String(cString: openblas_get_config()) }
    public static var coreName: String { String(cString: openblas_get_corename()) }
    /// The library `gemm` runs on, e.g. "oneDNN 2.6.3".
    public static var gemmLibrary: String {
        guard let v = dnnl_version()?.pointee else { return "oneDNN" }
        return "oneDNN \(v.major).\(v.minor).\(v.patch)"
    }

    /// C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, all row-major with leading dimensions
    /// `lda`, `ldb`, `ldc` (row strides). `transA` means A is stored [K,M]; `transB`, B is [N,K].
    @inline(__always)
    public static func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                            alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                            b: UnsafePointer<Float>, ldb: Int,
                            beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            scaleMatrix(c, rows: m, cols: n, ld: ldc, beta: beta)
            return
        }
        let status = OneDNN.withThreads { _ in
            dnnl_sgemm(transA ? 84 : 78, transB ? 84 : 78, Int64(m), Int64(n), Int64(k), alpha,
                       a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc))  // 84 "T", 78 "N"
        }
        precondition(status == dnnl_success, "dnnl_sgemm(\(m)x\(n)x\(k), lda \(lda), ldb \(ldb), ldc \(ldc)): status \(status)")
    }

    /// The reference for `gemm`: the definition, accumulated in Double.
    public static func gemmNaive(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                                 alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                                 b: UnsafePointer<Float>, ldb: Int,
                                 beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k {
                    let av = transA ? a[p * lda + i] : a[i * lda + p]
                    let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
                    s += Double(av) * Double(bv)
                }
                let old = beta == 0 ? 0 : beta * c[i * ldc + j]
                c[i * ldc + j] = Float(Double(alpha) * s) + old
            }
        }
    }

    private static func scaleMatrix(_ c: UnsafeMutablePointer<Float>, rows: Int, cols: Int, ld: Int, beta: Float) {
        for i in 0..<rows {
            for j in 0..<cols { c[i * ld + j] = beta == 0 ? 0 : beta * c[i * ld + j] }
        }
    }
}
