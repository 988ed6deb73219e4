/// 2-D convolution, NCHW activations, OIHW weights (PyTorch layouts), as im2col + GEMM.
///
/// Per sample: cols[C·KH·KW, OH·OW] = im2col(x), y[O, OH·OW] = W[O, C·KH·KW] · cols + b.
/// 1×1 convolutions with stride 1 and no padding skip im2col: y = W · x directly.
/// Output planes of 64×64 and more run on oneDNN's direct kernels instead (`OneDNNConvolution`),
/// where im2col's copies would cost more than they save; with `ComputePrecision.bf16` every
/// geometry oneDNN has a bf16 kernel for does.

/// Stride and padding. Padding may be asymmetric: the VAE encoder's downsampler pads only the
/// right and bottom edge by one before a stride-2 convolution (`F.pad(x, (0, 1, 0, 1))`).
public struct Conv2dParameters: Sendable, Equatable {
    public var stride: Int
    public var padTop: Int, padLeft: Int, padBottom: Int, padRight: Int

    public init(stride: Int = 1, padding: Int = 0) {
        self.init(stride: stride, padTop: padding, padLeft: padding, padBottom: padding, padRight: padding)
    }

    public init(stride: Int, padTop: Int, padLeft: Int, padBottom: Int, padRight: Int) {
        precondition(stride >= 1 && min(padTop, padLeft, padBottom, padRight) >= 0, "bad conv parameters")
        self.stride = stride
        self.padTop = padTop; self.padLeft = padLeft; self.padBottom = padBottom; self.padRight = padRight
    }

    /// AutoencoderKL Downsample2D: pad (0, 1, 0, 1), then 3×3 stride 2 without padding.
    public static let vaeDownsample = Conv2dParameters(stride: 2, padTop: 0, padLeft: 0, padBottom: 1, padRight: 1)
}

/// Sizes of one convolution, checked once.
public struct Conv2dGeometry: Sendable, Equatable {
    public let batch: Int, inChannels: Int, height: Int, width: Int
    public let outChannels: Int, kernelH: Int, kernelW: Int
    public let outHeight: Int, outWidth: Int
    public let parameters: Conv2dParameters
    /// Floats the im2col matrix may take (see `chunkRows`).
    public let columnBudget: Int

    /// 16 Mi floats (64 MiB).
    public static let defaultColumnBudget = 16 << 20

    public init(input: [Int], weight: [Int], parameters p: Conv2dParameters, columnBudget: Int = defaultColumnBudget) {
        precondition(input.count == 4 && weight.count == 4, "conv2d needs NCHW input and OIHW weight, got \(input) and \(weight)")
        precondition(input[1] == weight[1], "conv2d input has \(input[1]) channels, weight \(weight) expects \(weight[1])")
        batch = input[0]; inChannels = input[1]; height = input[2]; width = input[3]
        outChannels = weight[0]; kernelH = weight[2]; kernelW = weight[3]
        let spanH = height + p.padTop + p.padBottom - kernelH, spanW = width + p.padLeft + p.padRight - kernelW
        precondition(spanH >= 0 && spanW >= 0, "conv2d kernel \(weight) larger than padded input \(input)")
        outHeight = spanH / p.stride + 1
        outWidth = spanW / p.stride + 1
        parameters = p
        self.columnBudget = columnBudget
    }

    public var outputShape: [Int] { [batch, outChannels, outHeight, outWidth] }
    var colRows: Int { inChannels * kernelH * kernelW }
    var colCols: Int { outHeight * outWidth }
    var inPlane: Int { height * width }
    var isPointwise: Bool {
        kernelH == 1 && kernelW == 1 && parameters == Conv2dParameters(stride: 1, padding: 0)
    }
    /// Output rows per im2col chunk: the column matrix stays within `columnBudget`, so a
    /// 128-channel conv on a 512×512 VAE image does not need a 1.2 GB buffer. SD1.5 UNet convs
    /// (at most 11.8 Mi floats at 64×64 latents) run as one chunk with the default budget.
    var chunkRows: Int { max(1, min(outHeight, columnBudget / max(colRows * outWidth, 1))) }
    var outputRowChunks: [Range<Int>] {
        stride(from: 0, to: outHeight, by: chunkRows).map { $0..<min(outHeight, $0 + chunkRows) }
    }
    /// Multiply-adds × 2 for one forward pass.
    public var flops: Double { 2 * Double(batch * outChannels * colCols) * Double(colRows) }
}

public func conv2dForward(x: Tensor, weight: Tensor, bias: Tensor?, out: Tensor,
                          parameters: Conv2dParameters = Conv2dParameters(),
                          columnBudget: Int = Conv2dGeometry.defaultColumnBudget) {
    let timing = OpTimer.begin(.conv)
    defer { OpTimer.end(timing) }
    let g = Conv2dGeometry(input: x.shape, weight: weight.shape, parameters: parameters, columnBudget: columnBudget)
    precondition(out.shape == g.outputShape, "conv2d output \(out.shape), expected \(g.outputShape)")
    let (o, k, p) = (g.outChannels, g.colRows, g.colCols)
    FlopCounter.add(.conv, g.flops)
    if OneDNNConvolution.forward(x: x, weight: weight, bias: bias, out: out, g) { return }
    Scratch.with { arena in
        let cols = g.isPointwise ? nil : arena.tensor([k, g.chunkRows * g.outWidth], zeroed: false)
        for n in 0..<g.batch {
            let xn = x.pointer + n * g.inChannels * g.inPlane
            let yn = out.pointer + n * o * p
            guard let cols else {
                BLAS.gemm(m: o, n: p, k: k, a: weight.pointer, lda: k, b: xn, ldb: p, c: yn, ldc: p)
                continue
            }
            for rows in g.outputRowChunks {  // y[:, rows] = W · cols(x)[:, rows]
                let width = rows.count * g.outWidth
                im2col(xn, g, rows, cols.pointer)
                BLAS.gemm(m: o, n: width, k: k, a: weight.pointer, lda: k, b: cols.pointer, ldb: width,
                          c: yn + rows.lowerBound * g.outWidth, ldc: p)
            }
        }
    }
    if let bias { addChannelBias(out, bias) }
}

/// Gradients of `conv2dForward`, accumulated. `dx` nil skips the input gradient (e.g. conv_in);
/// `dWeight`/`dBias` nil mean frozen and their GEMMs are never computed.
///   forward: y = W · cols(x) + b
///   dcols = Wᵀ · dy, dx += col2im(dcols);  dW += dy · colsᵀ;  db += Σ_{n,p} dy
public func conv2dBackward(x: Tensor, weight: Tensor, dOut: Tensor,
                           dx: Tensor?, dWeight: Tensor?, dBias: Tensor?,
                           parameters: Conv2dParameters = Conv2dParameters(),
                           columnBudget: Int = Conv2dGeometry.defaultColumnBudget) {
    let timing = OpTimer.begin(.conv)
    defer { OpTimer.end(timing) }
    let g = Conv2dGeometry(input: x.shape, weight: weight.shape, parameters: parameters, columnBudget: columnBudget)
    precondition(dOut.shape == g.outputShape, "conv2d dOut \(dOut.shape), expected \(g.outputShape)")
    let (o, k, p) = (g.outChannels, g.colRows, g.colCols)
    if let dx { precondition(dx.shape == x.shape, "conv2d dx \(dx.shape) for input \(x.shape)") }
    if let dWeight { precondition(dWeight.shape == weight.shape, "conv2d dWeight \(dWeight.shape) for \(weight.shape)") }
    FlopCounter.add(.conv, g.flops * Double((dx == nil ? 0 : 1) + (dWeight == nil ? 0 : 1)))
    var dx = dx
    if let input = dx, OneDNNConvolution.backwardData(dOut: dOut, weight: weight, dx: input, g) {
        dx = nil
    }
    if dx != nil || dWeight != nil {
        Scratch.with { arena in
            let cols = g.isPointwise ? nil : arena.tensor([k, g.chunkRows * g.outWidth], zeroed: false)
            for n in 0..<g.batch {
                let xn = x.pointer + n * g.inChannels * g.inPlane
                let dyn = dOut.pointer + n * o * p
                let dxn = dx.map { $0.pointer + n * g.inChannels * g.inPlane }
                guard let cols else {
                    if let dxn {
                        BLAS.gemm(transA: true, m: k, n: p, k: o, a: weight.pointer, lda: k, b: dyn, ldb: p, beta: 1, c: dxn, ldc: p)
                    }
                    if let dWeight {
                        BLAS.gemm(transB: true, m: o, n: k, k: p, a: dyn, lda: p, b: xn, ldb: p, beta: 1, c: dWeight.pointer, ldc: k)
                    }
                    continue
                }
                for rows in g.outputRowChunks {
                    let width = rows.count * g.outWidth
                    let dy = dyn + rows.lowerBound * g.outWidth
                    if let dxn {
                        BLAS.gemm(transA: true, m: k, n: width, k: o, a: weight.pointer, lda: k, b: dy, ldb: p,
                                  c: cols.pointer, ldc: width)
                        col2imAdd(cols.pointer, g, rows, dxn)
                    }
                    if let dWeight {
                        im2col(xn, g, rows, cols.pointer)
                        BLAS.gemm(transB: true, m: o, n: k, k: width, a: dy, lda: p, b: cols.pointer, ldb: width,
                                  beta: 1, c: dWeight.pointer, ldc: k)
                    }
                }
            }
        }
    }
    if let dBias { sumChannels(dOut, into: dBias) }
}

/// cols[(c·KH + i)·KW + j, (oy − rows.lower)·OW + ox] = x[c, oy·s − padTop + i, ox·s − padLeft + j]
/// (0 outside the image), for output rows oy in `rows`.
func im2col(_ x: UnsafePointer<Float>, _ g: Conv2dGeometry, _ outRows: Range<Int>, _ cols: UnsafeMutablePointer<Float>) {
    let (h, w, ow, s) = (g.height, g.width, g.outWidth, g.parameters.stride)
    let (kh, kw) = (g.kernelH, g.kernelW)
    let (pt, pl) = (g.parameters.padTop, g.parameters.padLeft)
    let width = outRows.count * ow
    ThreadPool.shared.parallelRanges(g.colRows, grain: max(1, 8192 / max(width, 1))) { rows in
        for r in rows {
            let c = r / (kh * kw), i = (r / kw) % kh, j = r % kw
            let plane = x + c * h * w
            let dst = cols + r * width
            // Output columns whose input column is inside the image: ox in [lo, hi).
            let (lo, hi) = validColumns(g, j)
            for oy in outRows {
                let iy = oy * s - pt + i
                let row = dst + (oy - outRows.lowerBound) * ow
                if iy < 0 || iy >= h {
                    row.update(repeating: 0, count: ow)
                    continue
                }
                if lo > 0 { row.update(repeating: 0, count: lo) }
                let src = plane + iy * w - pl + j
                if s == 1 {
                    row.advanced(by: lo).update(from: src + lo, count: hi - lo)
                } else {
                    for ox in lo..<hi { row[ox] = src[ox * s] }
                }
                if hi < ow { (row + hi).update(repeating: 0, count: ow - hi) }
            }
        }
    }
}

/// Output columns ox in [lo, hi) whose input column ox·s − padLeft + j lies inside the image.
@inline(__always) private func validColumns(_ g: Conv2dGeometry, _ j: Int) -> (Int, Int) {
    let (s, pl) = (g.parameters.stride, g.parameters.padLeft)
    let lo = min(g.outWidth, max(0, floorDiv(pl - j + s - 1, s)))
    let hi = max(lo, min(g.outWidth, floorDiv(g.width - 1 + pl - j, s) + 1))
    return (lo, hi)
}

@inline(__always) func floorDiv(_ a: Int, _ b: Int) -> Int {
    let q = a / b
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
}

/// The adjoint of `im2col` for output rows `outRows`: dx[c, iy, ix] += Σ over the columns that
/// read it. One task per input channel, so no two tasks write the same element.
func col2imAdd(_ cols: UnsafePointer<Float>, _ g: Conv2dGeometry, _ outRows: Range<Int>, _ dx: UnsafeMutablePointer<Float>) {
    let (h, w, ow, s) = (g.height, g.width, g.outWidth, g.parameters.stride)
    let (kh, kw) = (g.kernelH, g.kernelW)
    let (pt, pl) = (g.parameters.padTop, g.parameters.padLeft)
    let width = outRows.count * ow
    ThreadPool.shared.parallelRanges(g.inChannels, grain: max(1, 8192 / max(kh * kw * width, 1))) { channels in
        for c in channels {
            let plane = dx + c * h * w
            for i in 0..<kh {
                for j in 0..<kw {
                    let src = cols + ((c * kh + i) * kw + j) * width
                    let (lo, hi) = validColumns(g, j)
                    for oy in outRows {
                        let iy = oy * s - pt + i
                        if iy < 0 || iy >= h { continue }
                        let dst = plane + iy * w - pl + j
                        let row = src + (oy - outRows.lowerBound) * ow
                        if s == 1 {
                            addInPlace(dst + lo, row + lo, hi - lo)
                        } else {
                            for ox in lo..<hi { dst[ox * s] += row[ox] }
                        }
                    }
                }
            }
        }
    }
}

/// y[n, c, ...] += b[c]
func addChannelBias(_ y: Tensor, _ bias: Tensor) {
    let (n, c) = (y.shape[0], y.shape[1])
    precondition(bias.count == c, "bias \(bias.shape) for \(c) channels")
    let plane = y.count / max(n * c, 1)
    ThreadPool.shared.parallelRanges(n * c, grain: max(1, 16384 / max(plane, 1))) { range in
        for nc in range {
            let v = Vec8(repeating: bias.pointer[nc % c])
            let p = y.pointer + nc * plane
            var i = 0
            while i + 8 <= plane { store8(load8(p + i) + v, p + i); i += 8 }
            while i < plane { p[i] += v[0]; i += 1 }
        }
    }
}

/// into[c] += Σ_{n, spatial} y[n, c, ...]
func sumChannels(_ y: Tensor, into: Tensor) {
    let (n, c) = (y.shape[0], y.shape[1])
    precondition(into.count == c)
    let plane = y.count / max(n * c, 1)
    ThreadPool.shared.parallelRanges(c, grain: max(1, 16384 / max(plane * n, 1))) { range in
        for ch in range {
            var s = 0.0
            for b in 0..<n { s += sumOf(y.pointer + (b * c + ch) * plane, plane) }
            into.pointer[ch] += Float(s)
        }
    }
}

// MARK: - Naive reference (direct loops, Double accumulation)

public func conv2dForwardNaive(x: Tensor, weight: Tensor, bias: Tensor?, out: Tensor,
                               parameters: Conv2dParameters = Conv2dParameters()) {
    let g = Conv2dGeometry(input: x.shape, weight: weight.shape, parameters: parameters)
    let s = parameters.stride
    for n in 0..<g.batch { for o in 0..<g.outChannels { for oy in 0..<g.outHeight { for ox in 0..<g.outWidth {
        var acc = Double(bias?.pointer[o] ?? 0)
        for c in 0..<g.inChannels { for i in 0..<g.kernelH { for j in 0..<g.kernelW {
            let iy = oy * s - parameters.padTop + i, ix = ox * s - parameters.padLeft + j
            guard iy >= 0, iy < g.height, ix >= 0, ix < g.width else { continue }
            acc += Double(x.pointer[((n * g.inChannels + c) * g.height + iy) * g.width + ix])
                * Double(weight.pointer[((o * g.inChannels + c) * g.kernelH + i) * g.kernelW + j])
        } } }
        out.pointer[((n * g.outChannels + o) * g.outHeight + oy) * g.outWidth + ox] = Float(acc)
    } } } }
}

public func conv2dBackwardNaive(x: Tensor, weight: Tensor, dOut: Tensor,
                                dx: Tensor?, dWeight: Tensor?, dBias: Tensor?,
                                parameters: Conv2dParameters = Conv2dParameters()) {
    let g = Conv2dGeometry(input: x.shape, weight: weight.shape, parameters: parameters)
    let s = parameters.stride
    for n in 0..<g.batch { for o in 0..<g.outChannels { for oy in 0..<g.outHeight { for ox in 0..<g.outWidth {
        let dy = dOut.pointer[((n * g.outChannels + o) * g.outHeight + oy) * g.outWidth + ox]
        dBias?.pointer[o] += dy
        for c in 0..<g.inChannels { for i in 0..<g.kernelH { for j in 0..<g.kernelW {
            let iy = oy * s - parameters.padTop + i, ix = ox * s - parameters.padLeft + j
            guard iy >= 0, iy < g.height, ix >= 0, ix < g.width else { continue }
            let xi = ((n * g.inChannels + c) * g.height + iy) * g.width + ix
            let wi = ((o * g.inChannels + c) * g.kernelH + i) * g.kernelW + j
            dx?.pointer[xi] += dy * weight.pointer[wi]
            dWeight?.pointer[wi] += dy * x.pointer[xi]
        } } }
    } } } }
}
