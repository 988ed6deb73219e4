import CDTensor

/// A weight delta ΔW [out, in] kept as two factors, Δ ≈ us · vh with us = U[:, :r]·diag(s[:r])
/// [out, r] and vh = Vᵀ[:r] [r, in] from the SVD ΔW = U diag(s) Vᵀ (spec §6): the form of ADB's
/// compressed deltas (`u`, `v`) and of the A1111 extension's `"delta_factors"` (`.US`, `.Vh`).
/// r·(out + in) values instead of out·in.
public struct LowRankDelta: @unchecked Sendable {
    /// [out, r]
    public let us: Tensor
    /// [r, in]
    public let vh: Tensor

    public var rank: Int { us.shape[1] }
    /// min(out, in): the rank of the full decomposition.
    public var fullRank: Int { min(us.shape[0], vh.shape[1]) }

    /// Factors as stored; nil unless us is [out, r] and vh [r, in] with r ≥ 1.
    public init?(us: Tensor, vh: Tensor) {
        guard us.rank == 2, vh.rank == 2, us.shape[1] == vh.shape[0], us.shape[1] >= 1 else { return nil }
        self.us = us
        self.vh = vh
    }

    /// The leading `rank(keeping:of:)` singular triplets of `delta` [out, in], from a float64 thin SVD;
    /// the factors are rounded to float32. Throws LAPACK's failure (no convergence).
    public init(truncating delta: Tensor, keeping ratio: Double) throws {
        precondition(delta.rank == 2, "a low-rank delta needs a matrix, got \(delta.shape)")
        let (m, n) = (delta.shape[0], delta.shape[1])
        let svd = try LAPACK.svd(delta.array.map(Double.init), rows: m, cols: n)
        let full = min(m, n), r = Self.rank(keeping: ratio, of: svd.s)
        let us = Tensor(zeros: [m, r]), vh = Tensor(zeros: [r, n])
        for i in 0..<m { for k in 0..<r { us.pointer[i * r + k] = Float(svd.u[i * full + k] * svd.s[k]) } }
        for k in 0..<r { for j in 0..<n { vh.pointer[k * n + j] = Float(svd.vt[k * n + j]) } }
        self.us = us
        self.vh = vh
    }

    /// How many of the singular values `s` (descending, ≥ 0) to keep: the smallest r ≥ 1 with
    /// Σ_{i<r} s_i ≥ ratio · Σ s_i, the shares compared with the extension's relative slack of
    /// 1.0001 so that a prefix landing exactly on the target is not lost to rounding. A criterion on
    /// the sum of singular values (ADB and the extension), not on energy (s²). `ratio` ≥ 1 keeps
    /// every nonzero value (no compression, as the extension's top_sum = 1). Never 0, unlike ADB's
    /// `compress.py` (spec §11 quirk 5): a dominant first value keeps one component.
    public static func rank(keeping ratio: Double, of s: [Double]) -> Int {
        let nonzero = (s.lastIndex { $0 > 0 } ?? 0) + 1
        if ratio >= 1 { return nonzero }
        let target = ratio * s.reduce(0, +)
        var kept = 0.0
        for r in 1...nonzero {
            kept += s[r - 1]
            if kept * 1.0001 >= target { return r }
        }
        return nonzero
    }

    /// us · vh [out, in], accumulated in float32 (sgemm) as the extension's `US.float() @ Vh.float()`.
    public func product() -> Tensor {
        let out = Tensor(zeros: [us.shape[0], vh.shape[1]])
        matmulForward(a: us, b: vh, out: out)
        return out
    }
}
