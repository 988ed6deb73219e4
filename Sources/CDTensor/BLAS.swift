import COpenBLAS

/// Row-major GEMM on OpenBLAS, its thread count, and the naive reference it is tested against.
public enum BLAS {
    /// Sets OpenBLAS's thread count (normally `ThreadPool.shared.threadCount`, so the two pools
    /// never oversubscribe the machine).
    public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }
    public static var threads: Int { Int(openblas_get_num_threads()) }
    public static var config: String { String(cString: openblas_get_config()) }
    public static var coreName: String { String(cString: openblas_get_corename()) }

    /// Runs `body` with OpenBLAS single-threaded: for kernels that call GEMM from inside
    /// `ThreadPool` tasks, where the parallelism is already ours. Afterwards OpenBLAS is set back
    /// to the pool's thread count. OpenBLAS's count is process-wide, so numerics run from one
    /// thread at a time (the trainer thread); inside a task this is a no-op (already 1).
    public static func singleThreaded<R>(_ body: () throws -> R) rethrows -> R {
        let pool = ThreadPool.shared  // created first: creating it sets OpenBLAS's count
        if ThreadPool.isInsideTask || pool.threadCount == 1 { return try body() }
        setThreads(1)
        defer { setThreads(pool.threadCount) }
        return try body()
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
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
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
