/// SIMD helpers for the hot loops: 8-wide fp32 loads/stores and a vectorized exp.
public typealias Vec8 = SIMD8<Float>

@inline(__always) func load8(_ p: UnsafePointer<Float>) -> Vec8 {
    UnsafeRawPointer(p).loadUnaligned(as: Vec8.self)
}

@inline(__always) func load8(_ p: UnsafeMutablePointer<Float>) -> Vec8 {
    UnsafeRawPointer(p).loadUnaligned(as: Vec8.self)
}

@inline(__always) func store8(_ v: Vec8, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vec8.self)
}

/// Lane-wise max/min. Written as compare + select because the standard library's
/// `pointwiseMax`/`clamped` on SIMD8 compile to out-of-line scalar loops.
@inline(__always) func vmax(_ a: Vec8, _ b: Vec8) -> Vec8 { a.replacing(with: b, where: a .< b) }
@inline(__always) func vmin(_ a: Vec8, _ b: Vec8) -> Vec8 { a.replacing(with: b, where: b .< a) }

/// Horizontal max and sum by halving (the standard library's `max()`/`sum()` on SIMD8 are
/// out-of-line generic calls, which showed in per-row softmax loops).
@inline(__always) func hmax(_ v: Vec8) -> Float {
    let a = vmax4(v.lowHalf, v.highHalf)
    let b = vmax2(a.lowHalf, a.highHalf)
    return Swift.max(b[0], b[1])
}

@inline(__always) func hsum(_ v: Vec8) -> Float {
    let a = v.lowHalf + v.highHalf
    let b = a.lowHalf + a.highHalf
    return b[0] + b[1]
}

@inline(__always) private func vmax4(_ a: SIMD4<Float>, _ b: SIMD4<Float>) -> SIMD4<Float> { a.replacing(with: b, where: a .< b) }
@inline(__always) private func vmax2(_ a: SIMD2<Float>, _ b: SIMD2<Float>) -> SIMD2<Float> { a.replacing(with: b, where: a .< b) }

/// `@_transparent` (not `@inline(__always)`, which the optimizer ignored here): an out-of-line
/// call passes SIMD8 in two halves and cost about half of the softmax and SiLU loops.
/// exp(x) for 8 lanes (Cephes expf: range reduction by ln 2, degree-6 polynomial; about 1 ulp
/// on [-87, 88]). Inputs below -87.3 give 0 and above 88.37 give ~2.4e38, so results stay finite.
/// n = round(x·log2 e) comes from adding 1.5·2²³ (the sum's low mantissa bits are n), because
/// `rounded(.down)` and Float→Int32 conversion on SIMD8 are not vectorized by the compiler.
@_transparent func exp8(_ input: Vec8) -> Vec8 {
    let x0 = vmin(vmax(input, Vec8(repeating: -87.33654)), Vec8(repeating: 88.37626))
    // addingProduct is a fused multiply-add (vfmadd with -target-cpu haswell); plain a * b + c
    // is not contracted by Swift.
    let t = Vec8(repeating: 12_582_912.0).addingProduct(x0, Vec8(repeating: 1.44269504088896341))
    let n = t - 12_582_912.0
    let x = x0.addingProduct(n, Vec8(repeating: -0.693359375)).addingProduct(n, Vec8(repeating: 2.12194440e-4))
    let z = x * x
    var y = Vec8(repeating: 1.3981999507e-3).addingProduct(Vec8(repeating: 1.9875691500e-4), x)
    y = Vec8(repeating: 8.3334519073e-3).addingProduct(y, x)
    y = Vec8(repeating: 4.1665795894e-2).addingProduct(y, x)
    y = Vec8(repeating: 1.6666665459e-1).addingProduct(y, x)
    y = Vec8(repeating: 5.0000001201e-1).addingProduct(y, x)
    y = (x + 1).addingProduct(y, z)
    // 2^n: bits(t) = 0x4B400000 + n, so (bits(t) − 0x4B400000 + 127) << 23.
    let pow2 = (unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B3F_FF81) &<< 23
    let scaled = y * unsafeBitCast(pow2, to: Vec8.self)
    return scaled.replacing(with: 0, where: input .< -87.33654)
}

/// log(x) for 8 lanes (Cephes logf: x = m·2^e with m in [√½, √2), degree-8 polynomial in m − 1;
/// about 1 ulp) for normal inputs; subnormals are outside its range. log 0 = −∞, log ∞ = ∞, and a
/// negative or NaN lane gives NaN.
@inline(__always) func log8(_ input: Vec8) -> Vec8 {
    let bits = unsafeBitCast(input, to: SIMD8<UInt32>.self)
    // The exponent field as a float without an int→float conversion (not vectorized by Swift):
    // 2²³ + field has the field in its low mantissa bits.
    var e = unsafeBitCast(((bits &>> 23) & 0xFF) | 0x4B00_0000, to: Vec8.self) - (8_388_608 + 126)
    var m = unsafeBitCast((bits & 0x807F_FFFF) | 0x3F00_0000, to: Vec8.self)  // in [0.5, 1)
    let small = m .< 0.707106781186547524
    e = e.replacing(with: e - 1, where: small)
    m = (m + m.replacing(with: 0, where: .!small)) - 1
    let z = m * m
    var y = Vec8(repeating: -1.1514610310e-1).addingProduct(Vec8(repeating: 7.0376836292e-2), m)
    y = Vec8(repeating: 1.1676998740e-1).addingProduct(y, m)
    y = Vec8(repeating: -1.2420140846e-1).addingProduct(y, m)
    y = Vec8(repeating: 1.4249322787e-1).addingProduct(y, m)
    y = Vec8(repeating: -1.6668057665e-1).addingProduct(y, m)
    y = Vec8(repeating: 2.0000714765e-1).addingProduct(y, m)
    y = Vec8(repeating: -2.4999993993e-1).addingProduct(y, m)
    y = Vec8(repeating: 3.3333331174e-1).addingProduct(y, m)
    y = y * m * z
    y = y.addingProduct(e, Vec8(repeating: -2.12194440e-4))
    y = y.addingProduct(z, Vec8(repeating: -0.5))
    var r = (m + y).addingProduct(e, Vec8(repeating: 0.693359375))
    r = r.replacing(with: -.infinity, where: input .== 0)
    r = r.replacing(with: .infinity, where: input .== .infinity)
    return r.replacing(with: .nan, where: .!(input .>= 0))  // negative or NaN
}

/// erf(x) for 8 lanes: x·P(x²)/Q(x²) with an odd degree-13 numerator and an even degree-8
/// denominator (the rational approximation Eigen and XLA use for float), with x clamped to ±4,
/// where erf is 1 to float precision. Absolute error about 1e-7 on the whole line (tested
/// against libm); NaN stays NaN.
@_transparent func erf8(_ input: Vec8) -> Vec8 {
    let x = vmin(vmax(input, Vec8(repeating: -4)), Vec8(repeating: 4))
    let x2 = x * x
    var p = Vec8(repeating: 2.77068142495902e-08).addingProduct(x2, Vec8(repeating: -2.72614225801306e-10))
    p = Vec8(repeating: -2.10102402082508e-06).addingProduct(x2, p)
    p = Vec8(repeating: -5.69250639462346e-05).addingProduct(x2, p)
    p = Vec8(repeating: -7.34990630326855e-04).addingProduct(x2, p)
    p = Vec8(repeating: -2.95459980854025e-03).addingProduct(x2, p)
    p = Vec8(repeating: -1.60960333262415e-02).addingProduct(x2, p)
    var q = Vec8(repeating: -2.13374055278905e-04).addingProduct(x2, Vec8(repeating: -1.45660718464996e-05))
    q = Vec8(repeating: -1.68282697438203e-03).addingProduct(x2, q)
    q = Vec8(repeating: -7.37332916720468e-03).addingProduct(x2, q)
    q = Vec8(repeating: -1.42647390514189e-02).addingProduct(x2, q)
    return (x * p / q).replacing(with: input, where: input .!= input)
}

/// Scalar exp with the same polynomial, for tails shorter than 8 lanes (so a row's result does
/// not depend on its length modulo 8).
@inline(__always) func exp1(_ x: Float) -> Float {
    exp8(Vec8(repeating: x))[0]
}

/// Numerically safe logistic function for 8 lanes.
@_transparent func sigmoid8(_ x: Vec8) -> Vec8 {
    1 / (1 + exp8(-x))
}

@inline(__always) func sigmoid1(_ x: Float) -> Float {
    sigmoid8(Vec8(repeating: x))[0]
}
