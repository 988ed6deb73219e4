import Foundation

/// Softmax over the last dimension of x[M, N] (leading dims flattened).
public func softmaxForward(x: Tensor, out: Tensor) {
    let timing = OpTimer.begin(.elementwise)
    defer { OpTimer.end(timing) }
    let n = x.dim(-1), m = x.count / max(n, 1)
    precondition(out.count == x.count, "softmax output \(out.shape) for \(x.shape)")
    ThreadPool.shared.parallelRanges(m, grain: max(1, 4096 / max(n, 1))) { rows in
        for r in rows { softmaxRow(x.pointer + r * n, out.pointer + r * n, n) }
    }
}

/// forward: y = softmax(x);  dx += y ∘ (dy − Σ dy·y)
public func softmaxBackward(out y: Tensor, dOut: Tensor, dx: Tensor) {
    let timing = OpTimer.begin(.elementwise)
    defer { OpTimer.end(timing) }
    let n = y.dim(-1), m = y.count / max(n, 1)
    precondition(dOut.count == y.count && dx.count == y.count, "softmax gradient shapes \(dOut.shape), \(dx.shape) for \(y.shape)")
    ThreadPool.shared.parallelRanges(m, grain: max(1, 4096 / max(n, 1))) { rows in
        for r in rows {
            let yr = y.pointer + r * n, dyr = dOut.pointer + r * n, dxr = dx.pointer + r * n
            let dot = Float(dotProduct(yr, dyr, n))
            for i in 0..<n { dxr[i] += yr[i] * (dyr[i] - dot) }
        }
    }
}

/// y = exp(x − max) / Σ exp(x − max) for one row (y may be x). A row that is entirely −∞ (fully
/// masked) gives zeros.
@inline(__always) func softmaxRow(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    if UnsafePointer(y) != x { y.update(from: x, count: n) }
    let (_, sum) = expRow(y, n)
    guard sum != 0 else { return }  // NaN falls through and stays NaN
    let inv = Vec8(repeating: 1 / sum)
    var i = 0
    while i + 8 <= n { store8(load8(y + i) * inv, y + i); i += 8 }
    while i < n { y[i] *= inv[0]; i += 1 }
}

/// x = exp(x − max x) in place; returns (max x, Σ exp(x − max x)). An all −∞ row gives zeros, (−∞, 0).
@inline(__always) func expRow(_ x: UnsafeMutablePointer<Float>, _ n: Int) -> (Float, Float) {
    var mv = Vec8(repeating: -.infinity)
    var i = 0
    while i + 8 <= n { mv = vmax(mv, load8(x + i)); i += 8 }
    var mx = hmax(mv)
    while i < n { mx = max(mx, x[i]); i += 1 }
    if mx == -.infinity {
        // Fully masked, or NaN everywhere (compare-and-select max skips NaN): keep NaN visible.
        let poisoned = (0..<n).contains { x[$0].isNaN }
        x.update(repeating: poisoned ? .nan : 0, count: n)
        return poisoned ? (.nan, .nan) : (mx, 0)
    }
    let ms = Vec8(repeating: mx)
    var acc = Vec8(), acc2 = Vec8()
    i = 0
    // Two independent exps per iteration: exp8 is one long dependency chain.
    while i + 16 <= n {
        let e = exp8(load8(x + i) - ms), e2 = exp8(load8(x + i + 8) - ms)
        store8(e, x + i); store8(e2, x + i + 8)
        acc += e; acc2 += e2
        i += 16
    }
    while i + 8 <= n { let e = exp8(load8(x + i) - ms); store8(e, x + i); acc += e; i += 8 }
    var sum = hsum(acc + acc2)
    while i < n { let e = exp1(x[i] - mx); x[i] = e; sum += e; i += 1 }
    return (mx, sum)
}

public func softmaxForwardNaive(x: Tensor, out: Tensor) {
    let n = x.dim(-1), m = x.count / max(n, 1)
    for r in 0..<m {
        var mx = -Double.infinity
        for i in 0..<n { mx = max(mx, Double(x.pointer[r * n + i])) }
        var s = 0.0
        for i in 0..<n { s += Foundation.exp(Double(x.pointer[r * n + i]) - mx) }
        for i in 0..<n { out.pointer[r * n + i] = Float(Foundation.exp(Double(x.pointer[r * n + i]) - mx) / s) }
    }
}

public func softmaxBackwardNaive(out y: Tensor, dOut: Tensor, dx: Tensor) {
    let n = y.dim(-1), m = y.count / max(n, 1)
    for r in 0..<m {
        var dot = 0.0
        for i in 0..<n { dot += Double(y.pointer[r * n + i]) * Double(dOut.pointer[r * n + i]) }
        for i in 0..<n { dx.pointer[r * n + i] += Float(Double(y.pointer[r * n + i]) * (Double(dOut.pointer[r * n + i]) - dot)) }
    }
}
