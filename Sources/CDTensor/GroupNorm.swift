import Foundation

/// Group normalization over x[N, C, spatial…] with G groups of C/G channels, affine per channel,
/// optionally fused with SiLU (ResnetBlock2D's `SiLU(norm(x))`, so the normalized tensor is never
/// stored). Forward saves mean and rstd, each [N, G]; backward recomputes x̂ from x.
public struct GroupNormStats {
    public let mean: Tensor   // [N, G]
    public let rstd: Tensor   // [N, G]
    public init(mean: Tensor, rstd: Tensor) { self.mean = mean; self.rstd = rstd }
    public init(batch: Int, groups: Int) {
        self.init(mean: Tensor(zeros: [batch, groups]), rstd: Tensor(zeros: [batch, groups]))
    }
}

private struct GroupNormDims {
    let n: Int, c: Int, groups: Int, spatial: Int
    var perGroup: Int { c / groups }
    init(_ x: Tensor, groups: Int, gamma: Tensor, beta: Tensor, stats: GroupNormStats) {
        precondition(x.rank >= 2, "group norm input \(x.shape) must be [N, C, …]")
        n = x.shape[0]; c = x.shape[1]; self.groups = groups
        spatial = x.count / max(n * c, 1)
        precondition(groups > 0 && c % groups == 0, "\(c) channels do not split into \(groups) groups")
        precondition(gamma.count == c && beta.count == c, "group norm affine \(gamma.shape)/\(beta.shape) for \(c) channels")
        precondition(stats.mean.count == n * groups && stats.rstd.count == n * groups, "group norm stats shape")
    }
}

public func groupNormForward(x: Tensor, gamma: Tensor, beta: Tensor, groups: Int, eps: Float,
                             silu: Bool = false, out: Tensor, stats: GroupNormStats) {
    let timing = OpTimer.begin(.norm)
    defer { OpTimer.end(timing) }
    let d = GroupNormDims(x, groups: groups, gamma: gamma, beta: beta, stats: stats)
    precondition(out.count == x.count)
    let len = d.perGroup * d.spatial
    ThreadPool.shared.parallelFor(d.n * groups) { task, _ in
        let (b, g) = (task / groups, task % groups)
        let base = (b * d.c + g * d.perGroup) * d.spatial
        let xs = x.pointer + base, ys = out.pointer + base
        let mean = meanOf(xs, len)
        let variance = sumOfSquaredDeviations(xs, len, mean: Float(mean)) / Double(max(len, 1))
        let rstd = Float(1 / (variance + Double(eps)).squareRoot())
        stats.mean.pointer[task] = Float(mean)
        stats.rstd.pointer[task] = rstd
        // μ as a float pair (hi + lo): (x − hi) is exact for x near μ, so a large common offset
        // does not cost precision in x̂ (x·scale + shift would cancel catastrophically).
        let hi = Float(mean), lo = Float(mean - Double(hi))
        for ci in 0..<d.perGroup {
            let ch = g * d.perGroup + ci
            affine(xs + ci * d.spatial, ys + ci * d.spatial, d.spatial, meanHi: hi, meanLo: lo,
                   scale: gamma.pointer[ch] * rstd, shift: beta.pointer[ch], silu: silu)
        }
    }
}

/// Gradients of `groupNormForward` (with the same `silu` flag), accumulated into `dx` and, when
/// not nil, `dGamma`/`dBeta`.
///   forward: x̂ = (x − μ)·rstd, z = γ·x̂ + β, y = z (or SiLU(z))
///   dz = dy (or dy·SiLU'(z)); dγ += Σ dz·x̂; dβ += Σ dz
///   dx += rstd·(γ·dz − mean_g(γ·dz) − x̂·mean_g(γ·dz·x̂))
public func groupNormBackward(x: Tensor, gamma: Tensor, beta: Tensor, groups: Int, silu: Bool = false,
                              stats: GroupNormStats, dOut: Tensor,
                              dx: Tensor?, dGamma: Tensor?, dBeta: Tensor?) {
    let timing = OpTimer.begin(.norm)
    defer { OpTimer.end(timing) }
    let d = GroupNormDims(x, groups: groups, gamma: gamma, beta: beta, stats: stats)
    precondition(dOut.count == x.count && (dx?.count ?? x.count) == x.count, "group norm dOut/dx must match x \(x.shape)")
    precondition((dGamma?.count ?? d.c) == d.c && (dBeta?.count ?? d.c) == d.c, "group norm dGamma/dBeta must have \(d.c) entries")
    let len = d.perGroup * d.spatial
    // Per-(sample, channel) sums of dz and dz·x̂, reduced over samples afterwards so that tasks
    // never write the same element.
    let sumDz = Tensor(zeros: [d.n, d.c]), sumDzXhat = Tensor(zeros: [d.n, d.c])
    ThreadPool.shared.parallelFor(d.n * groups) { task, _ in
        let (b, g) = (task / groups, task % groups)
        let mean = stats.mean.pointer[task], rstd = stats.rstd.pointer[task]
        var a = 0.0, bsum = 0.0  // Σ γ·dz and Σ γ·dz·x̂ over the group
        for ci in 0..<d.perGroup {
            let ch = g * d.perGroup + ci
            let off = (b * d.c + ch) * d.spatial
            let (sdz, sdzx) = channelGradSums(x.pointer + off, dOut.pointer + off, d.spatial, mean: mean, rstd: rstd,
                                              gamma: gamma.pointer[ch], beta: beta.pointer[ch], silu: silu)
            sumDz.pointer[b * d.c + ch] = Float(sdz)
            sumDzXhat.pointer[b * d.c + ch] = Float(sdzx)
            a += Double(gamma.pointer[ch]) * sdz
            bsum += Double(gamma.pointer[ch]) * sdzx
        }
        guard let dx else { return }
        let ma = Float(a / Double(len)), mb = Float(bsum / Double(len))
        for ci in 0..<d.perGroup {
            let ch = g * d.perGroup + ci
            let off = (b * d.c + ch) * d.spatial
            channelInputGrad(x.pointer + off, dOut.pointer + off, dx: dx.pointer + off, d.spatial, mean: mean, rstd: rstd,
                             gamma: gamma.pointer[ch], beta: beta.pointer[ch], silu: silu, meanA: ma, meanB: mb)
        }
    }
    for b in 0..<d.n {
        for ch in 0..<d.c {
            dGamma?.pointer[ch] += sumDzXhat.pointer[b * d.c + ch]
            dBeta?.pointer[ch] += sumDz.pointer[b * d.c + ch]
        }
    }
}

/// y = ((x − hi) − lo)·scale + shift, then SiLU if asked.
@inline(__always) private func affine(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int,
                                      meanHi: Float, meanLo: Float, scale: Float, shift: Float, silu: Bool) {
    let hv = Vec8(repeating: meanHi), lv = Vec8(repeating: meanLo)
    let sv = Vec8(repeating: scale), tv = Vec8(repeating: shift)
    var i = 0
    if silu {
        while i + 8 <= n { let z = ((load8(x + i) - hv) - lv) * sv + tv; store8(z * sigmoid8(z), y + i); i += 8 }
        while i < n { let z = ((x[i] - meanHi) - meanLo) * scale + shift; y[i] = z * sigmoid1(z); i += 1 }
    } else {
        while i + 8 <= n { store8(((load8(x + i) - hv) - lv) * sv + tv, y + i); i += 8 }
        while i < n { y[i] = ((x[i] - meanHi) - meanLo) * scale + shift; i += 1 }
    }
}

/// dz for one lane group: dy, or dy·SiLU'(z) with SiLU'(z) = σ(z)·(1 + z·(1 − σ(z))).
@inline(__always) private func dz8(_ dy: Vec8, _ xhat: Vec8, gamma: Vec8, beta: Vec8, silu: Bool) -> Vec8 {
    guard silu else { return dy }
    let z = xhat * gamma + beta
    let s = sigmoid8(z)
    return dy * s * (1 + z * (1 - s))
}

@inline(__always) private func channelGradSums(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ n: Int,
                                               mean: Float, rstd: Float, gamma: Float, beta: Float,
                                               silu: Bool) -> (Double, Double) {
    let mv = Vec8(repeating: mean), rv = Vec8(repeating: rstd)
    let gv = Vec8(repeating: gamma), bv = Vec8(repeating: beta)
    var sdz = Vec8(), sdzx = Vec8()
    var i = 0
    while i + 8 <= n {
        let xhat = (load8(x + i) - mv) * rv
        let dz = dz8(load8(dy + i), xhat, gamma: gv, beta: bv, silu: silu)
        sdz += dz
        sdzx += dz * xhat
        i += 8
    }
    var a = Double(hsum(sdz)), b = Double(hsum(sdzx))
    if i < n {
        var tx = Vec8(repeating: mean), tdy = Vec8()
        for j in i..<n { tx[j - i] = x[j]; tdy[j - i] = dy[j] }
        let xhat = (tx - mv) * rv
        let dz = dz8(tdy, xhat, gamma: gv, beta: bv, silu: silu)
        a += Double(hsum(dz)); b += Double(hsum(dz * xhat))
    }
    return (a, b)
}

@inline(__always) private func channelInputGrad(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                                                dx: UnsafeMutablePointer<Float>, _ n: Int,
                                                mean: Float, rstd: Float, gamma: Float, beta: Float,
                                                silu: Bool, meanA: Float, meanB: Float) {
    let mv = Vec8(repeating: mean), rv = Vec8(repeating: rstd)
    let gv = Vec8(repeating: gamma), bv = Vec8(repeating: beta)
    let av = Vec8(repeating: meanA), bbv = Vec8(repeating: meanB)
    var i = 0
    while i + 8 <= n {
        let xhat = (load8(x + i) - mv) * rv
        let dz = dz8(load8(dy + i), xhat, gamma: gv, beta: bv, silu: silu)
        store8(load8(dx + i) + rv * (gv * dz - av - xhat * bbv), dx + i)
        i += 8
    }
    if i < n {
        var tx = Vec8(repeating: mean), tdy = Vec8()
        for j in i..<n { tx[j - i] = x[j]; tdy[j - i] = dy[j] }
        let xhat = (tx - mv) * rv
        let dz = dz8(tdy, xhat, gamma: gv, beta: bv, silu: silu)
        let g = rv * (gv * dz - av - xhat * bbv)
        for j in i..<n { dx[j] += g[j - i] }
    }
}

// MARK: - Naive reference

public func groupNormForwardNaive(x: Tensor, gamma: Tensor, beta: Tensor, groups: Int, eps: Float,
                                  silu: Bool = false, out: Tensor, stats: GroupNormStats) {
    let d = GroupNormDims(x, groups: groups, gamma: gamma, beta: beta, stats: stats)
    let len = d.perGroup * d.spatial
    for b in 0..<d.n {
        for g in 0..<groups {
            let base = (b * d.c + g * d.perGroup) * d.spatial
            var mean = 0.0
            for i in 0..<len { mean += Double(x.pointer[base + i]) }
            mean /= Double(len)
            var variance = 0.0
            for i in 0..<len { let t = Double(x.pointer[base + i]) - mean; variance += t * t }
            variance /= Double(len)
            let rstd = 1 / (variance + Double(eps)).squareRoot()
            stats.mean.pointer[b * groups + g] = Float(mean)
            stats.rstd.pointer[b * groups + g] = Float(rstd)
            for i in 0..<len {
                let ch = g * d.perGroup + i / d.spatial
                let z = (Double(x.pointer[base + i]) - mean) * rstd * Double(gamma.pointer[ch]) + Double(beta.pointer[ch])
                out.pointer[base + i] = Float(silu ? z / (1 + Foundation.exp(-z)) : z)
            }
        }
    }
}

public func groupNormBackwardNaive(x: Tensor, gamma: Tensor, beta: Tensor, groups: Int, silu: Bool = false,
                                   stats: GroupNormStats, dOut: Tensor,
                                   dx: Tensor?, dGamma: Tensor?, dBeta: Tensor?) {
    let d = GroupNormDims(x, groups: groups, gamma: gamma, beta: beta, stats: stats)
    let len = d.perGroup * d.spatial
    for b in 0..<d.n {
        for g in 0..<groups {
            let base = (b * d.c + g * d.perGroup) * d.spatial
            let mean = Double(stats.mean.pointer[b * groups + g]), rstd = Double(stats.rstd.pointer[b * groups + g])
            var xhat = [Double](repeating: 0, count: len), dxhat = xhat
            var sumA = 0.0, sumB = 0.0
            for i in 0..<len {
                let ch = g * d.perGroup + i / d.spatial
                xhat[i] = (Double(x.pointer[base + i]) - mean) * rstd
                var dz = Double(dOut.pointer[base + i])
                if silu {
                    let z = xhat[i] * Double(gamma.pointer[ch]) + Double(beta.pointer[ch])
                    let s = 1 / (1 + Foundation.exp(-z))
                    dz *= s * (1 + z * (1 - s))
                }
                dGamma?.pointer[ch] += Float(dz * xhat[i])
                dBeta?.pointer[ch] += Float(dz)
                dxhat[i] = dz * Double(gamma.pointer[ch])
                sumA += dxhat[i]
                sumB += dxhat[i] * xhat[i]
            }
            for i in 0..<len {
                dx?.pointer[base + i] += Float(rstd * (dxhat[i] - sumA / Double(len) - xhat[i] * sumB / Double(len)))
            }
        }
    }
}
