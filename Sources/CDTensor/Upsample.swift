/// Nearest-neighbour 2× upsampling, x[N, C, H, W] → out[N, C, 2H, 2W] (each pixel → 2×2 block),
/// as `F.interpolate(scale_factor=2, mode="nearest")` in UNet and VAE Upsample2D.
public func upsampleNearest2xForward(x: Tensor, out: Tensor) {
    let timing = OpTimer.begin(.elementwise)
    defer { OpTimer.end(timing) }
    let (h, w) = (x.dim(-2), x.dim(-1)), planes = x.count / max(h * w, 1)
    precondition(out.count == 4 * x.count && out.dim(-2) == 2 * h && out.dim(-1) == 2 * w, "upsample output \(out.shape) for \(x.shape)")
    ThreadPool.shared.parallelRanges(planes, grain: max(1, 4096 / max(h * w, 1))) { r in
        for p in r {
            let src = x.pointer + p * h * w, dst = out.pointer + p * 4 * h * w
            for y in 0..<h {
                let row = dst + 2 * y * 2 * w
                for xx in 0..<w { let v = src[y * w + xx]; row[2 * xx] = v; row[2 * xx + 1] = v }
                (row + 2 * w).update(from: row, count: 2 * w)
            }
        }
    }
}

/// forward: out[2y+a, 2x+b] = x[y, x];  dx[y, x] += Σ_{a,b} dOut[2y+a, 2x+b]
public func upsampleNearest2xBackward(dOut: Tensor, dx: Tensor) {
    let timing = OpTimer.begin(.elementwise)
    defer { OpTimer.end(timing) }
    let (h, w) = (dx.dim(-2), dx.dim(-1)), planes = dx.count / max(h * w, 1)
    precondition(dOut.count == 4 * dx.count && dOut.dim(-2) == 2 * h && dOut.dim(-1) == 2 * w,
                 "upsample gradient \(dOut.shape) for input \(dx.shape)")
    ThreadPool.shared.parallelRanges(planes, grain: max(1, 4096 / max(h * w, 1))) { r in
        for p in r {
            let src = dOut.pointer + p * 4 * h * w, dst = dx.pointer + p * h * w
            for y in 0..<h {
                let r0 = src + 2 * y * 2 * w, r1 = r0 + 2 * w
                for xx in 0..<w { dst[y * w + xx] += r0[2 * xx] + r0[2 * xx + 1] + r1[2 * xx] + r1[2 * xx + 1] }
            }
        }
    }
}

public func upsampleNearest2xForwardNaive(x: Tensor, out: Tensor) {
    let (h, w) = (x.dim(-2), x.dim(-1)), planes = x.count / max(h * w, 1)
    for p in 0..<planes { for y in 0..<(2 * h) { for xx in 0..<(2 * w) {
        out.pointer[(p * 2 * h + y) * 2 * w + xx] = x.pointer[(p * h + y / 2) * w + xx / 2]
    } } }
}

public func upsampleNearest2xBackwardNaive(dOut: Tensor, dx: Tensor) {
    let (h, w) = (dx.dim(-2), dx.dim(-1)), planes = dx.count / max(h * w, 1)
    for p in 0..<planes { for y in 0..<(2 * h) { for xx in 0..<(2 * w) {
        dx.pointer[(p * h + y / 2) * w + xx / 2] += dOut.pointer[(p * 2 * h + y) * 2 * w + xx]
    } } }
}
