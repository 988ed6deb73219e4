/// Reductions and accumulation over contiguous fp32 runs, shared by the kernels. Sums use 8 float
/// lanes per block of 1024 elements and add the blocks in Double, so long runs (a 64×64 plane,
/// a whole group) keep about fp32 precision without a Double inner loop.

/// Σ (x[i] − shift) for i < n, in 8 float lanes per block of 1024, blocks summed in Double.
@inline(__always) func sumOf(_ x: UnsafePointer<Float>, _ n: Int, shift: Float = 0) -> Double {
    let sv = Vec8(repeating: shift)
    var total = 0.0
    var start = 0
    while start < n {
        let end = min(n, start + 1024)
        var acc = Vec8()
        var i = start
        while i + 8 <= end { acc += load8(x + i) - sv; i += 8 }
        var t = Double(hsum(acc))
        while i < end { t += Double(x[i] - shift); i += 1 }
        total += t
        start = end
    }
    return total
}

/// The mean of x[0..<n], summed relative to x[0] so that a large common offset does not swamp
/// the float lanes (normalization statistics).
@inline(__always) func meanOf(_ x: UnsafePointer<Float>, _ n: Int) -> Double {
    guard n > 0 else { return 0 }
    return Double(x[0]) + sumOf(x, n, shift: x[0]) / Double(n)
}

/// Σ (x − m)² in float lanes per block, blocks in Double.
@inline(__always) func sumOfSquaredDeviations(_ x: UnsafePointer<Float>, _ n: Int, mean: Float) -> Double {
    let m = Vec8(repeating: mean)
    var total = 0.0, start = 0
    while start < n {
        let end = min(n, start + 1024)
        var acc = Vec8()
        var i = start
        while i + 8 <= end { let t = load8(x + i) - m; acc += t * t; i += 8 }
        var s = Double(hsum(acc))
        while i < end { let t = x[i] - mean; s += Double(t * t); i += 1 }
        total += s
        start = end
    }
    return total
}

@inline(__always) func dotProduct(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Double {
    var acc = Vec8()
    var i = 0
    while i + 8 <= n { acc += load8(a + i) * load8(b + i); i += 8 }
    var s = Double(hsum(acc))
    while i < n { s += Double(a[i] * b[i]); i += 1 }
    return s
}

/// y[0..<n] += x[0..<n]
@inline(__always) func addInPlace(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) {
    var i = 0
    while i + 8 <= n { store8(load8(y + i) + load8(x + i), y + i); i += 8 }
    while i < n { y[i] += x[i]; i += 1 }
}
