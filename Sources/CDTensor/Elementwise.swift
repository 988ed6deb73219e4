/// Elementwise arithmetic on tensors of equal size, and the per-channel broadcast add that adds
/// a time embedding [N, C] to activations [N, C, H, W].

public func addForward(_ a: Tensor, _ b: Tensor, out: Tensor) {
    let timing = OpTimer.begin(.elementwise)
    defer { OpTimer.end(timing) }
    precondition(a.count == b.count && out.count == a.count, "add shapes \(a.shape) \(b.shape) \(out.shape)")
    zipVec(a.pointer, b.pointer, out.pointer, a.count) { $0 + $1 }
}

/// forward: y = a + b;  da += dy, db += dy (either may be nil).
public func addBackward(dOut: Tensor, da: Tensor?, db: Tensor?) {
    let timing = OpTimer.begin(.elementwise)
    defer { OpTimer.end(timing) }
    for d in [da, db].compactMap({ $0 }) { accumulate(dOut, into: d) }
}

public func mulForward(_ a: Tensor, _ b: Tensor, out: Tensor) {
    let timing = OpTimer.begin(.elementwise)
    defer { OpTimer.end(timing) }
    precondition(a.count == b.count && out.count == a.count, "mul shapes \(a.shape) \(b.shape) \(out.shape)")
    zipVec(a.pointer, b.pointer, out.pointer, a.count) { $0 * $1 }
}

/// forward: y = a·b;  da += dy·b, db += dy·a.
public func mulBackward(_ a: Tensor, _ b: Tensor, dOut: Tensor, da: Tensor?, db: Tensor?) {
    let timing = OpTimer.begin(.elementwise)
    defer { OpTimer.end(timing) }
    if let da { fmaInto(da, dOut, b) }
    if let db { fmaInto(db, dOut, a) }
}

public func scaleForward(_ x: Tensor, by s: Float, out: Tensor) {
    let timing = OpTimer.begin(.elementwise)
    defer { OpTimer.end(timing) }
    precondition(out.count == x.count)
    let sv = Vec8(repeating: s)
    zipVec(x.pointer, x.pointer, out.pointer, x.count) { v, _ in v * sv }
}

/// forward: y = s·x;  dx += s·dy.
public func scaleBackward(dOut: Tensor, by s: Float, dx: Tensor) {
    let timing = OpTimer.begin(.elementwise)
    defer { OpTimer.end(timing) }
    precondition(dx.count == dOut.count)
    let sv = Vec8(repeating: s)
    zipVec(dx.pointer, dOut.pointer, dx.pointer, dx.count) { d, g in d + sv * g }
}

/// into += x
public func accumulate(_ x: Tensor, into: Tensor) {
    let timing = OpTimer.begin(.elementwise)
    defer { OpTimer.end(timing) }
    precondition(x.count == into.count, "accumulate \(x.shape) into \(into.shape)")
    zipVec(into.pointer, x.pointer, into.pointer, x.count) { $0 + $1 }
}

/// out[n, c, …] = x[n, c, …] + v[n, c]
public func addChannelBroadcastForward(_ x: Tensor, _ v: Tensor, out: Tensor) {
    let timing = OpTimer.begin(.elementwise)
    defer { OpTimer.end(timing) }
    let (n, c) = (x.shape[0], x.shape[1]), plane = x.count / max(n * c, 1)
    precondition(v.count == n * c && out.count == x.count, "broadcast add \(x.shape) + \(v.shape)")
    ThreadPool.shared.parallelRanges(n * c, grain: max(1, 16384 / max(plane, 1))) { r in
        for nc in r {
            let bv = Vec8(repeating: v.pointer[nc])
            let src = x.pointer + nc * plane, dst = out.pointer + nc * plane
            var i = 0
            while i + 8 <= plane { store8(load8(src + i) + bv, dst + i); i += 8 }
            while i < plane { dst[i] = src[i] + bv[0]; i += 1 }
        }
    }
}

/// forward: y = x + v[:, :, None, None];  dx += dy, dv[n, c] += Σ_spatial dy[n, c].
public func addChannelBroadcastBackward(dOut: Tensor, dx: Tensor?, dv: Tensor?) {
    let timing = OpTimer.begin(.elementwise)
    defer { OpTimer.end(timing) }
    if let dx { accumulate(dOut, into: dx) }
    if let dv {
        let (n, c) = (dOut.shape[0], dOut.shape[1]), plane = dOut.count / max(n * c, 1)
        precondition(dv.count == n * c)
        ThreadPool.shared.parallelRanges(n * c, grain: max(1, 16384 / max(plane, 1))) { r in
            for nc in r { dv.pointer[nc] += Float(sumOf(dOut.pointer + nc * plane, plane)) }
        }
    }
}

/// out[i] = f(a[i], b[i]) in 8-lane blocks, split across the pool.
@inline(__always) func zipVec(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
                              _ n: Int, _ f: (Vec8, Vec8) -> Vec8) {
    ThreadPool.shared.parallelRanges(n, grain: 32768) { r in
        var i = r.lowerBound
        while i + 8 <= r.upperBound { store8(f(load8(a + i), load8(b + i)), out + i); i += 8 }
        while i < r.upperBound { out[i] = f(Vec8(repeating: a[i]), Vec8(repeating: b[i]))[0]; i += 1 }
    }
}

/// into += x·y
private func fmaInto(_ into: Tensor, _ x: Tensor, _ y: Tensor) {
    precondition(into.count == x.count && x.count == y.count)
    let (d, xp, yp) = (into.pointer, x.pointer, y.pointer)
    ThreadPool.shared.parallelRanges(into.count, grain: 32768) { r in
        var i = r.lowerBound
        while i + 8 <= r.upperBound { store8(load8(d + i) + load8(xp + i) * load8(yp + i), d + i); i += 8 }
        while i < r.upperBound { d[i] += xp[i] * yp[i]; i += 1 }
    }
}
