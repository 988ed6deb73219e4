#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Resampling filters of `RGBImage.resized`, named after PIL's `Image.Resampling` members.
public enum ResizeFilter: String, Sendable {
    case bilinear, bicubic, lanczos

    /// Half-width of the kernel at scale 1.
    var support: Double {
        switch self {
        case .bilinear: 1
        case .bicubic: 2
        case .lanczos: 3
        }
    }

    // The kernels, term for term as Pillow writes them (same operation order, so the same doubles).
    @inline(__always)
    func weight(_ x: Double) -> Double {
        switch self {
        case .bilinear:
            let x = abs(x)
            return x < 1 ? 1 - x : 0
        case .bicubic:
            let a = -0.5
            let x = abs(x)
            if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
            if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
            return 0
        case .lanczos:
            if -3 <= x && x < 3 { return Self.sinc(x) * Self.sinc(x / 3) }
            return 0
        }
    }

    @inline(__always)
    static func sinc(_ x: Double) -> Double {
        if x == 0 { return 1 }
        let px = x * Double.pi
        return sin(px) / px
    }
}

extension RGBImage {
    /// The image resampled to `width`×`height` exactly as PIL's
    /// `Image.resize((width, height), BILINEAR | BICUBIC | LANCZOS)` does for an 8-bit RGB image
    /// (Pillow ≥ 7, `reducing_gap=None`): a separable convolution, horizontal pass first (over the
    /// source rows the vertical pass needs), then vertical; the kernel support is widened by the
    /// reduction factor when downscaling (antialiasing); each output's weights are normalized to
    /// sum 1, converted to 22-bit fixed point, accumulated in integers with rounding, and clipped
    /// to 0…255 after each pass. An axis whose size does not change is not resampled; the same
    /// size returns the image itself.
    public func resized(width: Int, height: Int, filter: ResizeFilter) -> RGBImage {
        precondition(width > 0 && height > 0, "RGBImage.resized: target size \(width)×\(height)")
        precondition(self.width > 0 && self.height > 0, "RGBImage.resized: empty source image")
        if width == self.width && height == self.height { return self }

        let vertical = ResampleCoefficients(inSize: self.height, outSize: height, filter: filter)
        var image = self
        if width != self.width {
            // Only the source rows some output row reads.
            let firstRow = Int(vertical.bounds[0])
            let lastRow = Int(vertical.bounds[2 * (height - 1)] + vertical.bounds[2 * (height - 1) + 1])
            let horizontal = ResampleCoefficients(inSize: self.width, outSize: width, filter: filter)
            image = resampleHorizontally(rows: firstRow..<lastRow, horizontal)
            if height != self.height {
                return image.resampleVertically(vertical, rowOffset: firstRow)
            }
            return image
        }
        return image.resampleVertically(vertical, rowOffset: 0)
    }

    private func resampleHorizontally(rows: Range<Int>, _ c: ResampleCoefficients) -> RGBImage {
        let outW = c.outSize
        let inW = width
        let ksize = c.ksize
        var out = [UInt8](repeating: 0, count: outW * rows.count * 3)
        pixels.withUnsafeBufferPointer { srcBuf in
            out.withUnsafeMutableBufferPointer { dstBuf in
                c.fixed.withUnsafeBufferPointer { kBuf in
                    c.bounds.withUnsafeBufferPointer { bBuf in
                        let src = srcBuf.baseAddress!, dst = dstBuf.baseAddress!
                        let kk = kBuf.baseAddress!, bounds = bBuf.baseAddress!
                        for (oy, y) in rows.enumerated() {
                            let line = src + y * inW * 3
                            var o = dst + oy * outW * 3
                            for xx in 0..<outW {
                                let xmin = Int(bounds[2 * xx]), count = Int(bounds[2 * xx + 1])
                                let k = kk + xx * ksize
                                var p = line + xmin * 3
                                var s0: Int32 = resampleRoundingBias
                                var s1: Int32 = resampleRoundingBias
                                var s2: Int32 = resampleRoundingBias
                                for i in 0..<count {
                                    let w = k[i]
                                    s0 &+= Int32(p[0]) &* w
                                    s1 &+= Int32(p[1]) &* w
                                    s2 &+= Int32(p[2]) &* w
                                    p += 3
                                }
                                o[0] = clip8(s0)
                                o[1] = clip8(s1)
                                o[2] = clip8(s2)
                                o += 3
                            }
                        }
                    }
                }
            }
        }
        return RGBImage(width: outW, height: rows.count, pixels: out)
    }

    /// Output row yy = Σ_i k[yy][i] · row(bounds[yy].min + i − rowOffset). Accumulates whole rows
    /// (integer sums, so the order does not change the result), which vectorizes.
    private func resampleVertically(_ c: ResampleCoefficients, rowOffset: Int) -> RGBImage {
        let outH = c.outSize
        let rowBytes = width * 3
        let ksize = c.ksize
        var out = [UInt8](repeating: 0, count: rowBytes * outH)
        var acc = [Int32](repeating: 0, count: rowBytes)
        pixels.withUnsafeBufferPointer { srcBuf in
            out.withUnsafeMutableBufferPointer { dstBuf in
                acc.withUnsafeMutableBufferPointer { accBuf in
                    c.fixed.withUnsafeBufferPointer { kBuf in
                        let src = srcBuf.baseAddress!, dst = dstBuf.baseAddress!
                        let a = accBuf.baseAddress!, kk = kBuf.baseAddress!
                        for yy in 0..<outH {
                            let ymin = Int(c.bounds[2 * yy]) - rowOffset, count = Int(c.bounds[2 * yy + 1])
                            let k = kk + yy * ksize
                            a.update(repeating: resampleRoundingBias, count: rowBytes)
                            for i in 0..<count {
                                let w = k[i]
                                let line = src + (ymin + i) * rowBytes
                                for j in 0..<rowBytes { a[j] &+= Int32(line[j]) &* w }
                            }
                            let o = dst + yy * rowBytes
                            for j in 0..<rowBytes { o[j] = clip8(a[j]) }
                        }
                    }
                }
            }
        }
        return RGBImage(width: width, height: outH, pixels: out)
    }
}

/// Fixed-point fraction bits of the 8-bit resampler: 32 − 8 − 2, leaving room for the sign and
/// for sums above 1 (kernels with negative lobes).
private let resamplePrecisionBits: Int32 = 22
private let resampleRoundingBias: Int32 = 1 << (resamplePrecisionBits - 1)

@inline(__always)
private func clip8(_ v: Int32) -> UInt8 {
    let s = v >> resamplePrecisionBits  // arithmetic shift: floor, as Pillow's lookup index
    return s < 0 ? 0 : (s > 255 ? 255 : UInt8(truncatingIfNeeded: s))
}

/// Per output position: the first input index and the number of inputs (`bounds`), and that many
/// weights (`fixed`, row stride `ksize`) — Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`.
struct ResampleCoefficients {
    let outSize: Int
    let ksize: Int
    var bounds: [Int32]
    var fixed: [Int32]

    init(inSize: Int, outSize: Int, filter: ResizeFilter) {
        // Pillow passes the box edges as C floats (exact for integer sizes) and works in doubles.
        let in0 = 0.0, in1 = Double(Float(inSize))
        let scale = (in1 - in0) / Double(outSize)
        let filterScale = Swift.max(scale, 1.0)
        let support = filter.support * filterScale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        self.outSize = outSize
        self.ksize = ksize
        var bounds = [Int32](repeating: 0, count: outSize * 2)
        var fixed = [Int32](repeating: 0, count: outSize * ksize)
        var weights = [Double](repeating: 0, count: ksize)
        let invFilterScale = 1.0 / filterScale
        for xx in 0..<outSize {
            let center = in0 + (Double(xx) + 0.5) * scale
            // C's (int) conversion truncates toward zero, as Int(_: Double) does.
            let xmin = Swift.max(Int(center - support + 0.5), 0)
            let xmax = Swift.min(Int(center + support + 0.5), inSize) - xmin
            var sum = 0.0
            for x in 0..<xmax {
                let w = filter.weight((Double(x + xmin) - center + 0.5) * invFilterScale)
                weights[x] = w
                sum += w
            }
            for x in 0..<xmax {
                var w = weights[x]
                if sum != 0 { w /= sum }
                // (int)(±0.5 + w · 2^22): rounds half away from zero after the truncation.
                let scaled = w * Double(1 << resamplePrecisionBits)
                fixed[xx * ksize + x] = Int32(w < 0 ? scaled - 0.5 : scaled + 0.5)
            }
            bounds[2 * xx] = Int32(xmin)
            bounds[2 * xx + 1] = Int32(xmax)
        }
        self.bounds = bounds
        self.fixed = fixed
    }
}
