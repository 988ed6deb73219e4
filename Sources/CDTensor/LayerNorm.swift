/// Layer normalization over the last dimension D of x[M, D] (leading dims flattened), affine.
/// Forward saves mean and rstd, each [M].
public func layerNormForward(x: Tensor, gamma: Tensor, beta: Tensor, eps: Float,
                             out: Tensor, mean: Tensor, rstd: Tensor) {
    let timing = OpTimer.begin(.norm)
    defer { OpTimer.end(timing) }
    let d = x.dim(-1), m = x.count / max(d, 1)
    precondition(gamma.count == d && beta.count == d && out.count == x.count, "layer norm shapes")
    precondition(mean.count == m && rstd.count == m, "layer norm stats need \(m) rows")
    ThreadPool.shared.parallelRanges(m, grain: max(1, 4096 / max(d, 1))) { rows in
        for r in rows {
            let xs = x.pointer + r * d, ys = out.pointer + r * d
            let mu = meanOf(xs, d)
            let variance = sumOfSquaredDeviations(xs, d, mean: Float(mu)) / Double(d)
            let rs = Float(1 / (variance + Double(eps)).squareRoot())
            mean.pointer[r] = Float(mu)
            rstd.pointer[r] = rs
            let mv = Vec8(repeating: Float(mu)), rv = Vec8(repeating: rs)
            var i = 0
            while i + 8 <= d {
                store8((load8(xs + i) - mv) * rv * load8(gamma.pointer + i) + load8(beta.pointer + i), ys + i)
                i += 8
            }
            while i < d { ys[i] = (xs[i] - Float(mu)) * rs * gamma.pointer[i] + beta.pointer[i]; i += 1 }
        }
    }
}

/// Gradients of `layerNormForward`, accumulated.
///   forward: x̂ = (x − μ)·rstd, y = γ·x̂ + β
///   dγ += Σ_rows dy·x̂; dβ += Σ_rows dy; dx += rstd·(γ·dy − mean(γ·dy) − x̂·mean(γ·dy·x̂))
/// dγ/dβ are summed per worker (in Double) and reduced at the end, so rows can run in parallel.
public func layerNormBackward(x: Tensor, gamma: Tensor, mean: Tensor, rstd: Tensor, dOut: Tensor,
                              dx: Tensor?, dGamma: Tensor?, dBeta: Tensor?) {
    let timing = OpTimer.begin(.norm)
    defer { OpTimer.end(timing) }
    let d = x.dim(-1), m = x.count / max(d, 1)
    precondition(gamma.count == d && mean.count == m && rstd.count == m, "layer norm gamma/stats for \(x.shape)")
    precondition(dOut.count == x.count && (dx?.count ?? x.count) == x.count, "layer norm dOut/dx must match x \(x.shape)")
    precondition((dGamma?.count ?? d) == d && (dBeta?.count ?? d) == d, "layer norm dGamma/dBeta must have \(d) entries")
    let pool = ThreadPool.shared
    let wantParams = dGamma != nil || dBeta != nil
    // Per-worker Double sums of dy·x̂ and dy (rows × workers can be large; fp32 sums drift).
    let partial: UnsafeMutablePointer<Double>? = wantParams ? .allocate(capacity: pool.threadCount * 2 * d) : nil
    partial?.initialize(repeating: 0, count: pool.threadCount * 2 * d)
    defer { partial?.deallocate() }
    let chunks = min(m, pool.threadCount * 4)
    pool.parallelFor(chunks) { c, worker in
        let pg = partial.map { $0 + worker * 2 * d }
        var dxhat = [Float](repeating: 0, count: d)
        for r in (m * c / chunks)..<(m * (c + 1) / chunks) {
            let xs = x.pointer + r * d, dy = dOut.pointer + r * d
            let mu = mean.pointer[r], rs = rstd.pointer[r]
            var a = 0.0, b = 0.0
            for i in 0..<d {
                let xhat = (xs[i] - mu) * rs
                let g = dy[i] * gamma.pointer[i]
                dxhat[i] = g
                a += Double(g)
                b += Double(g * xhat)
                if let pg { pg[i] += Double(dy[i] * xhat); pg[d + i] += Double(dy[i]) }
            }
            guard let dx else { continue }
            let ma = Float(a / Double(d)), mb = Float(b / Double(d))
            let out = dx.pointer + r * d
            for i in 0..<d { out[i] += rs * (dxhat[i] - ma - (xs[i] - mu) * rs * mb) }
        }
    }
    if let partial {
        for i in 0..<d {
            var g = 0.0, b = 0.0
            for w in 0..<pool.threadCount { g += partial[w * 2 * d + i]; b += partial[w * 2 * d + d + i] }
            dGamma?.pointer[i] += Float(g)
            dBeta?.pointer[i] += Float(b)
        }
    }
}

public func layerNormForwardNaive(x: Tensor, gamma: Tensor, beta: Tensor, eps: Float,
                                  out: Tensor, mean: Tensor, rstd: Tensor) {
    let d = x.dim(-1), m = x.count / max(d, 1)
    for r in 0..<m {
        var mu = 0.0
        for i in 0..<d { mu += Double(x.pointer[r * d + i]) }
        mu /= Double(d)
        var v = 0.0
        for i in 0..<d { let t = Double(x.pointer[r * d + i]) - mu; v += t * t }
        let rs = 1 / (v / Double(d) + Double(eps)).squareRoot()
        mean.pointer[r] = Float(mu); rstd.pointer[r] = Float(rs)
        for i in 0..<d {
            out.pointer[r * d + i] = Float((Double(x.pointer[r * d + i]) - mu) * rs * Double(gamma.pointer[i]) + Double(beta.pointer[i]))
        }
    }
}

public func layerNormBackwardNaive(x: Tensor, gamma: Tensor, mean: Tensor, rstd: Tensor, dOut: Tensor,
                                   dx: Tensor?, dGamma: Tensor?, dBeta: Tensor?) {
    let d = x.dim(-1), m = x.count / max(d, 1)
    for r in 0..<m {
        let mu = Double(mean.pointer[r]), rs = Double(rstd.pointer[r])
        var a = 0.0, b = 0.0
        for i in 0..<d {
            let xhat = (Double(x.pointer[r * d + i]) - mu) * rs
            let dy = Double(dOut.pointer[r * d + i])
            a += dy * Double(gamma.pointer[i]); b += dy * Double(gamma.pointer[i]) * xhat
            dGamma?.pointer[i] += Float(dy * xhat)
            dBeta?.pointer[i] += Float(dy)
        }
        for i in 0..<d {
            let xhat = (Double(x.pointer[r * d + i]) - mu) * rs
            let g = Double(dOut.pointer[r * d + i]) * Double(gamma.pointer[i])
            dx?.pointer[r * d + i] += Float(rs * (g - a / Double(d) - xhat * b / Double(d)))
        }
    }
}
