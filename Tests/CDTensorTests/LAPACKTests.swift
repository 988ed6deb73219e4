import CDTensor
import Testing

/// The float64 LAPACK wrappers on row-major matrices: solutions satisfy their systems, the SVD
/// reconstructs its matrix with orthonormal factors, condition estimates and failures.
struct LAPACKTests {
    /// A deterministic pseudo-random matrix [rows, cols] in [-1, 1).
    func matrix(_ rows: Int, _ cols: Int, seed: UInt64) -> [Double] {
        var state = seed
        return (0..<(rows * cols)).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Double(state >> 11) / Double(1 << 53) * 2 - 1
        }
    }

    func multiply(_ a: [Double], _ b: [Double], _ m: Int, _ k: Int, _ n: Int) -> [Double] {
        var out = [Double](repeating: 0, count: m * n)
        for i in 0..<m { for p in 0..<k { for j in 0..<n { out[i * n + j] += a[i * k + p] * b[p * n + j] } } }
        return out
    }

    func maxDifference(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).map { abs($0 - $1) }.max() ?? 0 }

    @Test func solvesSymmetricPositiveDefiniteAndGeneralSystems() throws {
        let n = 7, k = 3
        let g = matrix(12, n, seed: 1)
        let spd = multiply(LAPACK.transpose(g, rows: 12, cols: n), g, n, 12, n)  // GᵀG, full rank
        let b = matrix(n, k, seed: 2)
        let (x, rcond) = try LAPACK.solveSPD(spd, n: n, b, columns: k)
        #expect(maxDifference(multiply(spd, x, n, n, k), b) < 1e-10)
        #expect(rcond > 0 && rcond <= 1)
        let a = matrix(n, n, seed: 3)
        let (y, rc) = try LAPACK.solve(a, n: n, b, columns: k)
        #expect(maxDifference(multiply(a, y, n, n, k), b) < 1e-10, "A Y = B with a non-symmetric A (row-major handled)")
        #expect(rc > 0)
    }

    @Test func conditionAndFailures() throws {
        let nearlySingular: [Double] = [1, 1, 1, 1 + 1e-12]
        let (_, rcond) = try LAPACK.solve(nearlySingular, n: 2, [1, 2], columns: 1)
        #expect(rcond < 1e-10)
        #expect(throws: LAPACK.Failure.self) { try LAPACK.solve([1, 2, 2, 4], n: 2, [1, 1], columns: 1) }
        #expect(throws: LAPACK.Failure.self) { try LAPACK.solveSPD([1, 0, 0, -1], n: 2, [1, 1], columns: 1) }
    }

    @Test func svdReconstructsWithOrthonormalFactors() throws {
        for (m, n) in [(5, 9), (9, 5), (6, 6)] {
            let a = matrix(m, n, seed: UInt64(m * 31 + n))
            let (u, s, vt) = try LAPACK.svd(a, rows: m, cols: n)
            let r = min(m, n)
            #expect(s.count == r && zip(s, s.dropFirst()).allSatisfy { $0 >= $1 }, "descending singular values")
            var us = u
            for i in 0..<m { for j in 0..<r { us[i * r + j] *= s[j] } }
            #expect(maxDifference(multiply(us, vt, m, r, n), a) < 1e-12, "U S Vᵀ = A for \(m)x\(n)")
            let utu = multiply(LAPACK.transpose(u, rows: m, cols: r), u, r, m, r)
            let identity = (0..<(r * r)).map { $0 / r == $0 % r ? 1.0 : 0.0 }
            #expect(maxDifference(utu, identity) < 1e-12, "UᵀU = I")
        }
    }
}
