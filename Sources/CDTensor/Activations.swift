import Foundation

/// Pointwise activations of the SD models.
///   silu(x)      = x·σ(x)                           (UNet, VAE)
///   gelu(x)      = x/2·(1 + erf(x/√2))               (exact GELU, in GEGLU)
///   quickGELU(x) = x·σ(1.702·x)                      (CLIP ViT-L text encoder)
public enum Activation: Sendable, CaseIterable {
    case silu, gelu, quickGELU

    /// f(x) and f'(x) in Double, the reference definition.
    func reference(_ x: Double) -> (value: Double, derivative: Double) {
        switch self {
        case .silu:
            let s = 1 / (1 + Foundation.exp(-x))
            return (x * s, s * (1 + x * (1 - s)))
        case .gelu:
            let cdf = 0.5 * (1 + Foundation.erf(x / 2.0.squareRoot()))
            let pdf = Foundation.exp(-0.5 * x * x) / (2 * Double.pi).squareRoot()
            return (x * cdf, cdf + x * pdf)
        case .quickGELU:
            let s = 1 / (1 + Foundation.exp(-1.702 * x))
            return (x * s, s + 1.702 * x * s * (1 - s))
        }
    }
}

public func activationForward(_ kind: Activation, x: Tensor, out: Tensor) {
    let timing = OpTimer.begin(.elementwise)
    defer { OpTimer.end(timing) }
    precondition(out.count == x.count, "activation output \(out.shape) for \(x.shape)")
    ThreadPool.shared.parallelRanges(x.count, grain: 16384) { r in
        let xs = x.pointer, ys = out.pointer
        switch kind {
        case .silu: mapVec(xs, ys, r) { let v = clampLow($0); return v * sigmoid8(v) }
        case .quickGELU: mapVec(xs, ys, r) { let v = clampLow($0); return v * sigmoid8(1.702 * v) }
        case .gelu: mapVec(xs, ys, r) { gelu8($0) }
        }
    }
}

/// dx += dy · f'(x)
public func activationBackward(_ kind: Activation, x: Tensor, dOut: Tensor, dx: Tensor) {
    let timing = OpTimer.begin(.elementwise)
    defer { OpTimer.end(timing) }
    precondition(dOut.count == x.count && dx.count == x.count, "activation gradient shapes")
    ThreadPool.shared.parallelRanges(x.count, grain: 16384) { r in
        let xs = x.pointer, dy = dOut.pointer, d = dx.pointer
        switch kind {
        case .silu:
            var i = r.lowerBound
            while i + 8 <= r.upperBound {
                let v = clampBoth(load8(xs + i)), s = sigmoid8(v)
                store8(load8(d + i) + load8(dy + i) * s * (1 + v * (1 - s)), d + i); i += 8
            }
            while i < r.upperBound {
                let v = clampBoth(Vec8(repeating: xs[i]))[0], s = sigmoid1(v)
                d[i] += dy[i] * s * (1 + v * (1 - s)); i += 1
            }
        case .quickGELU:
            var i = r.lowerBound
            while i + 8 <= r.upperBound {
                let v = clampBoth(load8(xs + i)), s = sigmoid8(1.702 * v)
                store8(load8(d + i) + load8(dy + i) * (s + 1.702 * v * s * (1 - s)), d + i); i += 8
            }
            while i < r.upperBound {
                let v = clampBoth(Vec8(repeating: xs[i]))[0], s = sigmoid1(1.702 * v)
                d[i] += dy[i] * (s + 1.702 * v * s * (1 - s)); i += 1
            }
        case .gelu:
            var i = r.lowerBound
            while i + 8 <= r.upperBound {
                store8(load8(d + i).addingProduct(load8(dy + i), geluDerivative8(load8(xs + i))), d + i); i += 8
            }
            while i < r.upperBound { d[i] += dy[i] * geluDerivative(xs[i]); i += 1 }
        }
    }
}

/// GEGLU (diffusers `GEGLU` after `ff.net.0.proj`): x[…, 2F] splits into hidden = x[…, :F] and
/// gate = x[…, F:]; out[…, F] = hidden · gelu(gate).
public func gegluForward(x: Tensor, out: Tensor) {
    let timing = OpTimer.begin(.elementwise)
    defer { OpTimer.end(timing) }
    let f = out.dim(-1), rows = out.count / max(f, 1)
    precondition(x.dim(-1) == 2 * f && x.count == 2 * out.count, "GEGLU input \(x.shape) for output \(out.shape)")
    ThreadPool.shared.parallelRanges(rows, grain: max(1, 8192 / max(f, 1))) { r in
        for row in r {
            let h = x.pointer + row * 2 * f, g = h + f, y = out.pointer + row * f
            var i = 0
            while i + 8 <= f { store8(load8(h + i) * gelu8(load8(g + i)), y + i); i += 8 }
            while i < f { y[i] = h[i] * gelu(g[i]); i += 1 }
        }
    }
}

/// forward: y = h·gelu(g);  dh += dy·gelu(g);  dg += dy·h·gelu'(g)
public func gegluBackward(x: Tensor, dOut: Tensor, dx: Tensor) {
    let timing = OpTimer.begin(.elementwise)
    defer { OpTimer.end(timing) }
    let f = dOut.dim(-1), rows = dOut.count / max(f, 1)
    precondition(x.count == 2 * dOut.count && dx.count == x.count, "GEGLU gradient shapes")
    ThreadPool.shared.parallelRanges(rows, grain: max(1, 8192 / max(f, 1))) { r in
        for row in r {
            let h = x.pointer + row * 2 * f, g = h + f, dy = dOut.pointer + row * f
            let dh = dx.pointer + row * 2 * f, dg = dh + f
            var i = 0
            while i + 8 <= f {
                let gv = load8(g + i), dyv = load8(dy + i)
                store8(load8(dh + i).addingProduct(dyv, gelu8(gv)), dh + i)
                store8(load8(dg + i).addingProduct(dyv * load8(h + i), geluDerivative8(gv)), dg + i)
                i += 8
            }
            while i < f {
                dh[i] += dy[i] * gelu(g[i])
                dg[i] += dy[i] * h[i] * geluDerivative(g[i])
                i += 1
            }
        }
    }
}

@inline(__always) private func mapVec(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ r: Range<Int>,
                                      _ f: (Vec8) -> Vec8) {
    var i = r.lowerBound
    while i + 8 <= r.upperBound { store8(f(load8(x + i)), y + i); i += 8 }
    if i < r.upperBound {
        var t = Vec8()
        for j in i..<r.upperBound { t[j - i] = x[j] }
        let v = f(t)
        for j in i..<r.upperBound { y[j] = v[j - i] }
    }
}

/// The sigmoid-gated activations are x·σ(a·x). Below x = −100 the result is 0 and the slope 0 to
/// fp32 precision, but x·σ(a·x) would multiply a huge x by exp's clamped tiny value; clamping x
/// first keeps them exact (and +∞·0 out of the slope).
@inline(__always) private func clampLow(_ x: Vec8) -> Vec8 { vmax(x, Vec8(repeating: -100)) }
@inline(__always) func clampBoth(_ x: Vec8) -> Vec8 {
    vmin(vmax(x, Vec8(repeating: -100)), Vec8(repeating: 100))
}

/// Exact GELU x/2·(1 + erf(x/√2)) for 8 lanes.
@_transparent func gelu8(_ x: Vec8) -> Vec8 {
    0.5 * x * (1 + erf8(x * 0.70710678118654752))
}

/// GELU's slope Φ(x) + x·φ(x) for 8 lanes; x is clamped to ±100 first (`clampBoth`) so that
/// exp(−x²/2) neither overflows nor meets ∞·0 (the slope is 0 or 1 there to float precision).
@_transparent func geluDerivative8(_ input: Vec8) -> Vec8 {
    let x = clampBoth(input)
    let phi = exp8(-0.5 * x * x) * 0.39894228040143268
    return (0.5 * (1 + erf8(x * 0.70710678118654752))).addingProduct(x, phi).replacing(with: input, where: input .!= input)
}

/// Scalar GELU and slope through the 8-lane versions, for tails shorter than 8 (so a value does not
/// depend on where in a row it falls).
@inline(__always) func gelu(_ x: Float) -> Float { gelu8(Vec8(repeating: x))[0] }

@inline(__always) func geluDerivative(_ x: Float) -> Float { geluDerivative8(Vec8(repeating: x))[0] }

// MARK: - Naive reference (Double)

public func activationForwardNaive(_ kind: Activation, x: Tensor, out: Tensor) {
    for i in 0..<x.count { out.pointer[i] = Float(kind.reference(Double(x.pointer[i])).value) }
}

public func activationBackwardNaive(_ kind: Activation, x: Tensor, dOut: Tensor, dx: Tensor) {
    for i in 0..<x.count { dx.pointer[i] += Float(Double(dOut.pointer[i]) * kind.reference(Double(x.pointer[i])).derivative) }
}

public func gegluForwardNaive(x: Tensor, out: Tensor) {
    let f = out.dim(-1)
    for row in 0..<(out.count / max(f, 1)) {
        for i in 0..<f {
            let h = Double(x.pointer[row * 2 * f + i]), g = Double(x.pointer[row * 2 * f + f + i])
            out.pointer[row * f + i] = Float(h * Activation.gelu.reference(g).value)
        }
    }
}

public func gegluBackwardNaive(x: Tensor, dOut: Tensor, dx: Tensor) {
    let f = dOut.dim(-1)
    for row in 0..<(dOut.count / max(f, 1)) {
        for i in 0..<f {
            let h = Double(x.pointer[row * 2 * f + i]), g = Double(x.pointer[row * 2 * f + f + i])
            let dy = Double(dOut.pointer[row * f + i])
            let (v, dv) = Activation.gelu.reference(g)
            dx.pointer[row * 2 * f + i] += Float(dy * v)
            dx.pointer[row * 2 * f + f + i] += Float(dy * h * dv)
        }
    }
}
