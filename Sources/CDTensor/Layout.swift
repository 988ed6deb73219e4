/// Layout changes between the UNet's image layout and its token layout, and the channel concat of
/// skip connections. Each is its own adjoint pair, so the backward is the forward's inverse.

/// out[b, j, i] = x[b, i, j] for x [B, R, C] → out [B, C, R] (NCHW planes ↔ [B, H·W, C] tokens).
/// Done in 32×32 blocks so both sides are read and written a cache line at a time.
public func transposeForward(_ x: Tensor, rows r: Int, cols c: Int, out: Tensor) {
    let b = x.count / max(r * c, 1)
    precondition(x.count == b * r * c && out.count == x.count, "transpose of \(x.shape) as [\(b), \(r), \(c)]")
    let tile = 32
    let tilesR = (r + tile - 1) / tile, tilesC = (c + tile - 1) / tile
    ThreadPool.shared.parallelFor(b * tilesR) { task, _ in
        let (s, tr) = (task / tilesR, task % tilesR)
        let src = x.pointer + s * r * c, dst = out.pointer + s * r * c
        let i0 = tr * tile, i1 = min(r, i0 + tile)
        for tc in 0..<tilesC {
            let j0 = tc * tile, j1 = min(c, j0 + tile)
            for i in i0..<i1 { for j in j0..<j1 { dst[j * r + i] = src[i * c + j] } }
        }
    }
}

/// forward: out = xᵀ per batch;  dx += dOutᵀ.
public func transposeBackward(dOut: Tensor, rows r: Int, cols c: Int, dx: Tensor) {
    let t = Tensor(zeros: [dOut.count])
    transposeForward(dOut, rows: c, cols: r, out: t)
    accumulate(t, into: dx)
}

/// out[b] = [a[b]; c[b]] along dimension 1: a [B, C1, …] and c [B, C2, …] → [B, C1 + C2, …].
public func concatChannelsForward(_ a: Tensor, _ c: Tensor, out: Tensor) {
    let b = a.shape[0]
    let na = a.count / max(b, 1), nc = c.count / max(b, 1)
    precondition(c.shape[0] == b && out.count == a.count + c.count, "concat \(a.shape) + \(c.shape) into \(out.shape)")
    precondition(Array(a.shape.dropFirst(2)) == Array(c.shape.dropFirst(2)), "concat needs equal spatial sizes: \(a.shape), \(c.shape)")
    for s in 0..<b {
        (out.pointer + s * (na + nc)).update(from: a.pointer + s * na, count: na)
        (out.pointer + s * (na + nc) + na).update(from: c.pointer + s * nc, count: nc)
    }
}

/// forward: out = [a; c];  da += dOut[:, :C1], dc += dOut[:, C1:] (either may be nil).
public func concatChannelsBackward(dOut: Tensor, da: Tensor?, dc: Tensor?, firstCount na: Int, secondCount nc: Int) {
    let b = dOut.count / max(na + nc, 1)
    precondition(dOut.count == b * (na + nc) && (da?.count ?? b * na) == b * na && (dc?.count ?? b * nc) == b * nc,
                 "concat gradient shapes")
    for s in 0..<b {
        if let da { addInPlace(da.pointer + s * na, dOut.pointer + s * (na + nc), na) }
        if let dc { addInPlace(dc.pointer + s * nc, dOut.pointer + s * (na + nc) + na, nc) }
    }
}
