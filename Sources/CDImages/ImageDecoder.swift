#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Decodes JPEG, PNG and WebP files (recognized by their first bytes, not their names) into
/// upright 8-bit RGB, the way training code gets them from Pillow with
/// `ImageOps.exif_transpose(Image.open(f))` then `.convert("RGB")`:
///
/// - EXIF orientation 2…8 is applied (JPEG APP1 Exif in either byte order, PNG `eXIf`, WebP
///   `EXIF`; XMP `tiff:Orientation` when EXIF has none, as Pillow does).
/// - Grayscale becomes R = G = B; palettes are expanded.
/// - Alpha (RGBA, gray+alpha, palette or gray/RGB `tRNS`, WebP alpha) is composited onto opaque
///   white with the arithmetic of Pillow's `Image.alpha_composite` (white background).
/// - CMYK and YCCK JPEGs are read as Adobe/Photoshop inverted CMYK and converted like Pillow's
///   CMYK → RGB: R = (255 − K) − (C·(255 − K) / 255, rounded), likewise G from M, B from Y.
/// - 16-bit PNG keeps the high byte of each sample, as Pillow's 16-bit RGB(A) reading does
///   (RGB and gray exactly; with alpha through libpng's 16→8 scaling, within 1–2 levels).
///   Pillow clips 16-bit *grayscale* to 0…255 on convert (a white image); this decoder keeps the
///   high byte there too, on purpose.
/// - PNG gamma/chromaticity/ICC chunks are ignored (as Pillow ignores them).
///
/// Images over `maxSide` pixels per side or `maxPixels` in all are refused from their headers,
/// before pixel memory is allocated. Every failure is an `ImageError` naming the file.
public enum ImageDecoder {
    /// Largest accepted width or height.
    public static let maxSide = 16384
    /// Largest accepted width × height (100 megapixels).
    public static let maxPixels = 100_000_000
    /// Largest accepted file.
    public static let maxFileBytes = 1 << 30

    public static func decode(path: String) throws -> RGBImage {
        try decode(data: readFile(path), name: path)
    }

    public static func decode(data: [UInt8], name: String) throws -> RGBImage {
        guard !data.isEmpty else { throw ImageError(file: name, kind: .empty, reason: "empty file") }
        switch Format(sniffing: data) {
        case .jpeg: return try JPEGDecoder.decode(data, name: name)
        case .png: return try PNGDecoder.decode(data, name: name)
        case .webp: return try WebPDecoder.decode(data, name: name)
        case .other(let format):
            throw ImageError(
                file: name, kind: .unsupported,
                reason: "\(format) images are not supported (JPEG, PNG and WebP are)")
        case .unknown:
            throw ImageError(
                file: name, kind: .unrecognized,
                reason: "not a JPEG, PNG or WebP image (first bytes \(hexPrefix(data)))")
        }
    }

    enum Format: Equatable {
        case jpeg, png, webp, other(String), unknown

        init(sniffing d: [UInt8]) {
            func starts(_ bytes: [UInt8], at offset: Int = 0) -> Bool {
                d.count >= offset + bytes.count && d[offset..<(offset + bytes.count)].elementsEqual(bytes)
            }
            func ascii(_ s: String, at offset: Int = 0) -> Bool { starts(Array(s.utf8), at: offset) }
            if starts([0xFF, 0xD8, 0xFF]) {
                self = .jpeg
            } else if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) {
                self = .png
            } else if ascii("RIFF") && ascii("WEBP", at: 8) {
                self = .webp
            } else if ascii("GIF87a") || ascii("GIF89a") {
                self = .other("GIF")
            } else if ascii("BM") && d.count >= 26 {
                self = .other("BMP")
            } else if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A]) {
                self = .other("TIFF")
            } else if ascii("ftyp", at: 4) && (ascii("avif", at: 8) || ascii("avis", at: 8)) {
                self = .other("AVIF")
            } else if ascii("ftyp", at: 4) && (ascii("heic", at: 8) || ascii("heix", at: 8) || ascii("mif1", at: 8)) {
                self = .other("HEIF")
            } else if starts([0xFF, 0x4F, 0xFF, 0x51]) || starts([0, 0, 0, 0x0C, 0x6A, 0x50, 0x20, 0x20]) {
                self = .other("JPEG 2000")
            } else if starts([0xFF, 0x0A]) || starts([0, 0, 0, 0x0C, 0x4A, 0x58, 0x4C, 0x20]) {
                self = .other("JPEG XL")
            } else {
                self = .unknown
            }
        }
    }

    static func hexPrefix(_ d: [UInt8]) -> String {
        d.prefix(8).map { b in
            let s = String(b, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined(separator: " ")
    }

    /// Refuses sizes over the limits (or zero) from a header, before allocating.
    static func checkSize(width: Int, height: Int, name: String, format: String) throws {
        guard width > 0 && height > 0 else {
            throw ImageError(file: name, kind: .corrupt, reason: "\(format) declares an empty size \(width)×\(height)")
        }
        if width > maxSide || height > maxSide || width * height > maxPixels {
            throw ImageError(
                file: name, kind: .tooLarge,
                reason: "\(format) image is \(width)×\(height); the limit is \(maxSide) pixels per side"
                    + " and \(maxPixels / 1_000_000) megapixels")
        }
    }

    static func readFile(_ path: String) throws -> [UInt8] {
        func failure(_ what: String, _ err: Int32) -> ImageError {
            ImageError(file: path, kind: .unreadable, reason: "cannot \(what): \(String(cString: strerror(err)))")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("open", errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw failure("stat", errno) }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw failure("read", EISDIR) }
        let size = Int(st.st_size)
        if size > maxFileBytes {
            throw ImageError(
                file: path, kind: .tooLarge, reason: "file is \(size) bytes; the limit is \(maxFileBytes)")
        }
        var out = [UInt8](repeating: 0, count: size)
        var filled = 0
        try out.withUnsafeMutableBytes { buf in
            while filled < size {
                let n = read(fd, buf.baseAddress! + filled, size - filled)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw failure("read", errno)
                }
                if n == 0 { break }  // shrank while reading
                filled += n
            }
        }
        if filled < size { out.removeSubrange(filled...) }
        // A file that grew (or a size-less special file): read the rest too.
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw failure("read", errno)
            }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<n])
            if out.count > maxFileBytes {
                throw ImageError(file: path, kind: .tooLarge, reason: "file is over \(maxFileBytes) bytes")
            }
        }
        return out
    }
}

// MARK: - Pixel conversions shared by the formats

enum PixelMath {
    /// Pillow's `Image.alpha_composite(white, rgba)` for one channel: 7-bit-precision integer
    /// blend with rounded divisions by 255.
    @inline(__always)
    static func overWhite(_ c: UInt8, _ a: UInt8) -> UInt8 {
        let a32 = UInt32(a)
        let coef1 = a32 << 7  // a·255·255·128 / (255·255)
        let coef2 = (255 << 7) - coef1
        let tmp = UInt32(c) * coef1 + 255 * coef2 + (0x80 << 7)
        return UInt8(truncatingIfNeeded: (((tmp >> 8) + tmp) >> 8) >> 7)
    }

    /// RGBA (straight alpha) → RGB over white, in place of a 3-byte-per-pixel buffer.
    static func compositeRGBA(_ rgba: UnsafePointer<UInt8>, into rgb: UnsafeMutablePointer<UInt8>, count: Int) {
        for i in 0..<count {
            let s = rgba + 4 * i, d = rgb + 3 * i
            let a = s[3]
            if a == 255 {
                d[0] = s[0]; d[1] = s[1]; d[2] = s[2]
            } else {
                d[0] = overWhite(s[0], a); d[1] = overWhite(s[1], a); d[2] = overWhite(s[2], a)
            }
        }
    }

    /// Pillow's CMYK;I unpacking (stored bytes are inverted ink, Adobe/Photoshop convention)
    /// followed by its CMYK → RGB conversion: R = CLIP8(nk − MULDIV255(C, nk)), nk = 255 − K.
    static func invertedCMYKToRGB(_ cmyk: UnsafePointer<UInt8>, into rgb: UnsafeMutablePointer<UInt8>, count: Int) {
        @inline(__always) func channel(_ stored: UInt8, _ nk: Int32) -> UInt8 {
            let ink = 255 - Int32(stored)
            let tmp = ink * nk + 128
            let v = nk - (((tmp >> 8) + tmp) >> 8)
            return UInt8(clamping: v)
        }
        for i in 0..<count {
            let s = cmyk + 4 * i, d = rgb + 3 * i
            let nk = Int32(s[3])  // 255 − (255 − stored K)
            d[0] = channel(s[0], nk)
            d[1] = channel(s[1], nk)
            d[2] = channel(s[2], nk)
        }
    }
}
