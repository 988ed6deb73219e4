import COpenBLAS

/// Float64 dense linear algebra over OpenBLAS's LAPACK, on row-major matrices (`[Double]` of
/// rows × cols). LAPACK is column-major: a row-major A is LAPACK's Aᵀ, which each wrapper accounts
/// for. Errors (a singular or non-positive-definite matrix) are thrown, not trapped.
public enum LAPACK {
    public struct Failure: Error, CustomStringConvertible, Equatable {
        public let routine: String
        public let info: Int
        public let reason: String
        public var description: String { "\(routine) failed (info \(info)): \(reason)" }
    }

    /// Solves A X = B for symmetric positive definite A [n, n] (Cholesky) with B [n, k] → X [n, k];
    /// also returns LAPACK's estimate of A's reciprocal condition number in the 1-norm (1: perfect,
    /// near 0: ill-conditioned).
    public static func solveSPD(_ a: [Double], n: Int, _ b: [Double], columns k: Int) throws -> (x: [Double], rcond: Double) {
        precondition(a.count == n * n && b.count == n * k, "solveSPD: A \(a.count) for n \(n), B \(b.count) for k \(k)")
        var f = a  // symmetric: row-major and column-major are the same matrix
        var nn = Int32(n), lda = Int32(n), info: Int32 = 0
        let norm = oneNorm(a, rows: n, cols: n)
        var uplo = CChar(UInt8(ascii: "L"))
        dpotrf_(&uplo, &nn, &f, &lda, &info, 1)
        if info > 0 { throw Failure(routine: "dpotrf", info: Int(info), reason: "the matrix is not positive definite (leading minor \(info))") }
        if info < 0 { throw Failure(routine: "dpotrf", info: Int(info), reason: "bad argument \(-info)") }
        var rcond = 0.0, anorm = norm
        var work = [Double](repeating: 0, count: 3 * n), iwork = [Int32](repeating: 0, count: n)
        dpocon_(&uplo, &nn, &f, &lda, &anorm, &rcond, &work, &iwork, &info, 1)
        // B row-major [n, k] is column-major [k, n]; LAPACK wants [n, k] column-major: transpose.
        var x = transpose(b, rows: n, cols: k)
        var nrhs = Int32(k), ldb = Int32(n)
        dpotrs_(&uplo, &nn, &nrhs, &f, &lda, &x, &ldb, &info, 1)
        if info != 0 { throw Failure(routine: "dpotrs", info: Int(info), reason: "bad argument \(-info)") }
        return (transpose(x, rows: k, cols: n), rcond)
    }

    /// Solves A X = B for a general square A [n, n] (LU with partial pivoting), B [n, k] → X [n, k],
    /// with the reciprocal condition estimate of A in the 1-norm.
    public static func solve(_ a: [Double], n: Int, _ b: [Double], columns k: Int) throws -> (x: [Double], rcond: Double) {
        precondition(a.count == n * n && b.count == n * k, "solve: A \(a.count) for n \(n), B \(b.count) for k \(k)")
        var f = transpose(a, rows: n, cols: n)
        var nn = Int32(n), lda = Int32(n), info: Int32 = 0
        var ipiv = [Int32](repeating: 0, count: n)
        var anorm = oneNorm(a, rows: n, cols: n)
        dgetrf_(&nn, &nn, &f, &lda, &ipiv, &info)
        if info > 0 { throw Failure(routine: "dgetrf", info: Int(info), reason: "the matrix is singular (U[\(info),\(info)] = 0)") }
        if info < 0 { throw Failure(routine: "dgetrf", info: Int(info), reason: "bad argument \(-info)") }
        var rcond = 0.0
        var norm = CChar(UInt8(ascii: "1")), trans = CChar(UInt8(ascii: "N"))
        var work = [Double](repeating: 0, count: 4 * n), iwork = [Int32](repeating: 0, count: n)
        dgecon_(&norm, &nn, &f, &lda, &anorm, &rcond, &work, &iwork, &info, 1)
        var x = transpose(b, rows: n, cols: k)
        var nrhs = Int32(k), ldb = Int32(n)
        dgetrs_(&trans, &nn, &nrhs, &f, &lda, &ipiv, &x, &ldb, &info, 1)
        if info != 0 { throw Failure(routine: "dgetrs", info: Int(info), reason: "bad argument \(-info)") }
        return (transpose(x, rows: k, cols: n), rcond)
    }

    /// Thin SVD of A [m, n]: A = U diag(s) Vᵀ with U [m, r], s [r] descending, Vᵀ [r, n], r = min(m, n).
    public static func svd(_ a: [Double], rows m: Int, cols n: Int) throws -> (u: [Double], s: [Double], vt: [Double]) {
        precondition(a.count == m * n, "svd: \(a.count) values for \(m)x\(n)")
        let r = min(m, n)
        if r == 0 { return ([], [], []) }
        // Row-major A is column-major Aᵀ [n, m] = V S Uᵀ: decompose Aᵀ and swap the roles.
        var f = a
        var mm = Int32(n), nn = Int32(m), lda = Int32(n), info: Int32 = 0
        var s = [Double](repeating: 0, count: r)
        var uT = [Double](repeating: 0, count: n * r)   // column-major [n, r]: Aᵀ's U = our V
        var vtT = [Double](repeating: 0, count: r * m)  // column-major [r, m]: Aᵀ's Vᵀ = our Uᵀ
        var ldu = Int32(n), ldvt = Int32(r)
        var jobz = CChar(UInt8(ascii: "S"))
        var iwork = [Int32](repeating: 0, count: 8 * r)
        var query = 0.0, lwork: Int32 = -1
        dgesdd_(&jobz, &mm, &nn, &f, &lda, &s, &uT, &ldu, &vtT, &ldvt, &query, &lwork, &iwork, &info, 1)
        lwork = Int32(query)
        var work = [Double](repeating: 0, count: max(1, Int(lwork)))
        dgesdd_(&jobz, &mm, &nn, &f, &lda, &s, &uT, &ldu, &vtT, &ldvt, &work, &lwork, &iwork, &info, 1)
        if info > 0 { throw Failure(routine: "dgesdd", info: Int(info), reason: "the SVD did not converge") }
        if info < 0 { throw Failure(routine: "dgesdd", info: Int(info), reason: "bad argument \(-info)") }
        // Our U [m, r] row-major: U[i][j] = (Aᵀ's Vᵀ)[j][i] = vtT column-major (j + i·r).
        let u = vtT  // column-major [r, m] is row-major [m, r]
        // Our Vᵀ [r, n] row-major: Vᵀ[j][c] = (Aᵀ's U)[c][j] = uT column-major (c + j·n).
        let vt = uT  // column-major [n, r] is row-major [r, n]
        return (u, s, vt)
    }

    /// AᵀA [cols, cols] of row-major A [rows, cols] (both triangles filled), by `cblas_dsyrk`.
    public static func gram(_ a: [Double], rows: Int, cols: Int) -> [Double] {
        precondition(a.count == rows * cols, "gram: \(a.count) values for \(rows)x\(cols)")
        var c = [Double](repeating: 0, count: cols * cols)
        guard rows > 0 else { return c }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(cols), Int32(rows), 1, a, Int32(cols), 0, &c, Int32(cols))
        for i in 0..<cols { for j in 0..<i { c[i * cols + j] = c[j * cols + i] } }
        return c
    }

    /// A B for row-major A [m, k] and B [k, n] → [m, n] (`cblas_dgemm`).
    public static func multiply(_ a: [Double], _ b: [Double], m: Int, k: Int, n: Int) -> [Double] {
        precondition(a.count == m * k && b.count == k * n, "multiply: \(a.count), \(b.count) for \(m)x\(k)x\(n)")
        var c = [Double](repeating: 0, count: m * n)
        guard m > 0, n > 0, k > 0 else { return c }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(k), b, Int32(n), 0, &c, Int32(n))
        return c
    }

    /// Row-major [rows, cols] → row-major [cols, rows].
    public static func transpose(_ a: [Double], rows: Int, cols: Int) -> [Double] {
        var out = [Double](repeating: 0, count: a.count)
        for i in 0..<rows { for j in 0..<cols { out[j * rows + i] = a[i * cols + j] } }
        return out
    }

    /// max over columns of Σ_i |a_ij| (row-major).
    static func oneNorm(_ a: [Double], rows: Int, cols: Int) -> Double {
        var sums = [Double](repeating: 0, count: cols)
        for i in 0..<rows { for j in 0..<cols { sums[j] += abs(a[i * cols + j]) } }
        return sums.max() ?? 0
    }
}
