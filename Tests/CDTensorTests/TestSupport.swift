import Testing
@testable import CDTensor

/// Seeded test data, so failures reproduce.
typealias SeededRandom = SplitMix64

extension SplitMix64 {
    mutating func tensor(_ shape: [Int], _ lo: Float = -1, _ hi: Float = 1) -> Tensor { uniformTensor(shape, lo, hi) }
}

/// Expects |a − b| ≤ atol + rtol·|b| elementwise; on failure prints the worst element and the
/// tolerances so the message says how far off it is.
func expectClose(_ a: Tensor, _ b: Tensor, rtol: Float = 1e-5, atol: Float = 1e-5, _ what: String,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(a.count == b.count, "\(what): sizes \(a.shape) vs \(b.shape)", sourceLocation: sourceLocation)
    guard a.count == b.count else { return }
    var worst = 0, worstExcess: Float = -.infinity, maxAbs: Float = 0
    for i in 0..<a.count {
        let d = abs(a.pointer[i] - b.pointer[i])
        if !(d.isFinite) && a.pointer[i] != b.pointer[i] { worst = i; worstExcess = .infinity; break }
        maxAbs = max(maxAbs, d)
        let excess = d - (atol + rtol * abs(b.pointer[i]))
        if excess > worstExcess { worstExcess = excess; worst = i }
    }
    #expect(worstExcess <= 0,
            "\(what): element \(worst) is \(a.pointer[worst]) vs \(b.pointer[worst]); max |diff| \(maxAbs); atol \(atol), rtol \(rtol)",
            sourceLocation: sourceLocation)
}

/// Σ out·weights in Double: a scalar loss whose gradient with respect to `out` is `weights`.
func projection(_ out: Tensor, _ weights: Tensor) -> Double {
    var s = 0.0
    for i in 0..<out.count { s += Double(out.pointer[i]) * Double(weights.pointer[i]) }
    return s
}

/// Central finite differences of `loss` with respect to every element of `param`, compared with
/// `analytic` by relative error of the whole vector: ‖fd − analytic‖ / max(‖fd‖, floor) ≤ tol.
func expectGradient(_ what: String, param: Tensor, analytic: Tensor, eps: Float = 1e-2, tol: Double = 1e-2,
                    loss: () -> Double, sourceLocation: SourceLocation = #_sourceLocation) {
    var diff2 = 0.0, norm2 = 0.0, worst = 0, worstDiff = 0.0
    var fdWorst = 0.0
    for i in 0..<param.count {
        let keep = param.pointer[i]
        param.pointer[i] = keep + eps
        let up = loss()
        param.pointer[i] = keep - eps
        let down = loss()
        param.pointer[i] = keep
        let fd = (up - down) / (2 * Double(eps))
        let d = fd - Double(analytic.pointer[i])
        diff2 += d * d
        norm2 += fd * fd
        if abs(d) > worstDiff { worstDiff = abs(d); worst = i; fdWorst = fd }
    }
    let rel = diff2.squareRoot() / max(norm2.squareRoot(), 1e-3)
    #expect(rel <= tol,
            "\(what): relative error \(rel) > \(tol); worst element \(worst): finite difference \(fdWorst) vs analytic \(analytic.pointer[worst])",
            sourceLocation: sourceLocation)
}
