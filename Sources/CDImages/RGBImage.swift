/// An 8-bit RGB image: `pixels` is row-major, 3 bytes (R, G, B) per pixel, no row padding.
public struct RGBImage: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var pixels: [UInt8]

    /// `pixels.count` must be `width * height * 3`; sizes must not be negative.
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0, "RGBImage: negative size \(width)×\(height)")
        precondition(
            pixels.count == width * height * 3,
            "RGBImage: \(pixels.count) bytes for \(width)×\(height)×3")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The image mirrored left–right (PIL `Transpose.FLIP_LEFT_RIGHT`).
    public func flippedHorizontally() -> RGBImage {
        transposed(.flipLeftRight)
    }

    /// The `width`×`height` region whose top-left corner is (`x`, `y`); it must lie inside the image.
    public func cropped(x: Int, y: Int, width: Int, height: Int) -> RGBImage {
        precondition(
            x >= 0 && y >= 0 && width >= 0 && height >= 0 && x + width <= self.width
                && y + height <= self.height,
            "RGBImage.cropped: (\(x), \(y)) \(width)×\(height) is not inside \(self.width)×\(self.height)")
        if x == 0 && y == 0 && width == self.width && height == self.height { return self }
        let rowBytes = width * 3
        var out = [UInt8](repeating: 0, count: rowBytes * height)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                guard rowBytes > 0 else { return }
                for row in 0..<height {
                    let from = src.baseAddress! + ((y + row) * self.width + x) * 3
                    (dst.baseAddress! + row * rowBytes).update(from: from, count: rowBytes)
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: out)
    }

    /// The centered min(width, height) square, placed like torchvision's `CenterCrop`:
    /// offset = round((size − side) / 2) with Python's round (halves to even), so a 7-pixel
    /// excess starts at 4 and a 5-pixel excess at 2.
    public func centerCroppedSquare() -> RGBImage {
        let side = Swift.min(width, height)
        let left = Self.centerOffset(width - side)
        let top = Self.centerOffset(height - side)
        return cropped(x: left, y: top, width: side, height: side)
    }

    static func centerOffset(_ excess: Int) -> Int {
        Int((Double(excess) / 2).rounded(.toNearestOrEven))
    }
}

extension RGBImage {
    /// PIL's `Image.Transpose` operations, as `ImageOps.exif_transpose` uses them for EXIF
    /// orientations 2…8.
    enum Transpose {
        case flipLeftRight, rotate180, flipTopBottom, transpose, rotate270, transverse, rotate90

        /// The operation that makes an image with this EXIF orientation upright (nil for 1 and
        /// anything outside 2…8, as in `exif_transpose`).
        init?(exifOrientation: Int) {
            switch exifOrientation {
            case 2: self = .flipLeftRight
            case 3: self = .rotate180
            case 4: self = .flipTopBottom
            case 5: self = .transpose
            case 6: self = .rotate270
            case 7: self = .transverse
            case 8: self = .rotate90
            default: return nil
            }
        }
    }

    func transposed(_ op: Transpose) -> RGBImage {
        let (w, h) = (width, height)
        let swaps: Bool
        switch op {
        case .transpose, .rotate270, .transverse, .rotate90: swaps = true
        default: swaps = false
        }
        let (ow, oh) = swaps ? (h, w) : (w, h)
        var out = [UInt8](repeating: 0, count: pixels.count)
        pixels.withUnsafeBufferPointer { s in
            out.withUnsafeMutableBufferPointer { d in
                guard let src = s.baseAddress, let dst = d.baseAddress else { return }
                // Output pixel (x, y) comes from input (sx, sy) = (x0 + y·dxy + x·dxx, …), written
                // as a start offset plus steps (in input pixels) per output column and row.
                let start: Int, perColumn: Int, perRow: Int
                switch op {
                case .flipLeftRight: (start, perColumn, perRow) = (w - 1, -1, w)
                case .rotate180: (start, perColumn, perRow) = ((h - 1) * w + w - 1, -1, -w)
                case .flipTopBottom: (start, perColumn, perRow) = ((h - 1) * w, 1, -w)
                case .transpose: (start, perColumn, perRow) = (0, w, 1)  // out(x,y) = in(y, x)
                case .rotate270: (start, perColumn, perRow) = ((h - 1) * w, -w, 1)  // in(y, h-1-x)
                case .transverse: (start, perColumn, perRow) = ((h - 1) * w + w - 1, -w, -1)  // in(w-1-y, h-1-x)
                case .rotate90: (start, perColumn, perRow) = (w - 1, w, -1)  // in(w-1-y, x)
                }
                for y in 0..<oh {
                    var si = start + y * perRow
                    var di = y * ow * 3
                    for _ in 0..<ow {
                        let sp = src + si * 3
                        dst[di] = sp[0]
                        dst[di + 1] = sp[1]
                        dst[di + 2] = sp[2]
                        si += perColumn
                        di += 3
                    }
                }
            }
        }
        return RGBImage(width: ow, height: oh, pixels: out)
    }
}
