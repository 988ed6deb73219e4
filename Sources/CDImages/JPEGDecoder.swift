import CJPEG

/// JPEG through TurboJPEG (libjpeg-turbo): accurate integer IDCT and fancy (smooth) chroma
/// upsampling, libjpeg's defaults and what Pillow uses. Gray, YCbCr and RGB JPEGs are decoded to
/// RGB by libjpeg; CMYK and YCCK to CMYK, then converted as Pillow converts Adobe CMYK.
enum JPEGDecoder {
    static func decode(_ data: [UInt8], name: String) throws -> RGBImage {
        guard let handle = tjInitDecompress() else {
            throw ImageError(file: name, kind: .corrupt, reason: "cannot start the JPEG decoder")
        }
        defer { tjDestroy(handle) }
        func message() -> String {
            guard let s = tjGetErrorStr2(handle) else { return "unknown error" }
            return String(cString: s)
        }

        var width: Int32 = 0, height: Int32 = 0, subsamp: Int32 = 0, colorspace: Int32 = 0
        let headerRC = data.withUnsafeBufferPointer { buf in
            tjDecompressHeader3(handle, buf.baseAddress, UInt(buf.count), &width, &height, &subsamp, &colorspace)
        }
        // A warning here (rc −1, TJERR_WARNING, sizes filled in) is judged after decoding, where
        // libjpeg issues it again. Zero sizes: the data ended (or was only tables) before a frame.
        if width <= 0 || height <= 0 || (headerRC != 0 && tjGetErrorCode(handle) != Int32(TJERR_WARNING.rawValue)) {
            let m = headerRC != 0 ? message() : "no frame header"
            if structure(data) == .endOfData || isTruncation(m) {
                throw ImageError(file: name, kind: .truncated, reason: "truncated JPEG (\(m))")
            }
            throw ImageError(file: name, kind: .corrupt, reason: "corrupt JPEG header (\(m))")
        }
        try ImageDecoder.checkSize(width: Int(width), height: Int(height), name: name, format: "JPEG")

        let w = Int(width), h = Int(height)
        let cmyk = colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue)
        let channels = cmyk ? 4 : 3
        let format = cmyk ? TJPF_CMYK : TJPF_RGB
        var raw = [UInt8](repeating: 0, count: w * h * channels)
        // LIMITSCANS: refuse progressive files with absurd scan counts (a decoding-time bomb).
        let flags = Int32(TJFLAG_LIMITSCANS)
        let rc = data.withUnsafeBufferPointer { src in
            raw.withUnsafeMutableBufferPointer { dst in
                tjDecompress2(
                    handle, src.baseAddress, UInt(src.count), dst.baseAddress, width, width * Int32(channels),
                    height, Int32(format.rawValue), flags)
            }
        }
        if rc != 0 {
            // libjpeg warns and goes on (gray filler) when data is missing or damaged; TurboJPEG
            // keeps only the last message. Pillow raises for data that ends early and ignores
            // warnings otherwise; here only warnings known to be harmless are let through.
            let m = message()
            let warning = tjGetErrorCode(handle) == Int32(TJERR_WARNING.rawValue)
            if structure(data) == .endOfData || isTruncation(m) {
                throw ImageError(file: name, kind: .truncated, reason: "truncated JPEG (\(m))")
            }
            if !warning || !isHarmless(m) {
                throw ImageError(file: name, kind: .corrupt, reason: "corrupt JPEG data (\(m))")
            }
        }

        var image: RGBImage
        if cmyk {
            var rgb = [UInt8](repeating: 0, count: w * h * 3)
            raw.withUnsafeBufferPointer { s in
                rgb.withUnsafeMutableBufferPointer { d in
                    PixelMath.invertedCMYKToRGB(s.baseAddress!, into: d.baseAddress!, count: w * h)
                }
            }
            image = RGBImage(width: w, height: h, pixels: rgb)
        } else {
            image = RGBImage(width: w, height: h, pixels: raw)
        }
        if let o = metadata(data).orientation, let t = RGBImage.Transpose(exifOrientation: o) {
            image = image.transposed(t)
        }
        return image
    }

    /// libjpeg's JWRN_JPEG_EOF: the decoder asked for bytes past the end of the data.
    static func isTruncation(_ m: String) -> Bool {
        m.contains("Premature end of JPEG file")
    }

    /// libjpeg warnings about metadata or stray bytes, not about the image data.
    static func isHarmless(_ m: String) -> Bool {
        ["extraneous bytes before marker", "unknown JFIF revision", "Unknown Adobe color transform",
         "Inconsistent progression sequence", "bad ICC marker"].contains { m.contains($0) }
    }

    enum StructureEnd { case endOfImage, firstScan, endOfData, malformed }

    /// Whether the file reaches its EOI marker: a file that runs out first is truncated,
    /// whatever libjpeg's last message says.
    static func structure(_ d: [UInt8]) -> StructureEnd {
        walk(d, stopAtFirstScan: false) { _, _ in }
    }

    /// APP1 Exif / XMP segments before the first scan, as Pillow collects them.
    static func metadata(_ d: [UInt8]) -> OrientationMetadata {
        var meta = OrientationMetadata()
        let xmpID = Array("http://ns.adobe.com/xap/1.0/\0".utf8)
        walk(d, stopAtFirstScan: true) { marker, payload in
            guard marker == 0xE1 else { return }
            if OrientationMetadata.hasPrefix(payload, OrientationMetadata.exifPrefix) {
                if meta.exif == nil {
                    meta.exif = payload
                } else {
                    meta.exifContinuation += payload.dropFirst(6)
                }
            } else if OrientationMetadata.hasPrefix(payload, xmpID) {
                meta.xmp = payload.dropFirst(xmpID.count)
            }
        }
        return meta
    }

    /// Walks the marker segments after SOI, calling `body(marker, payload)` for each, and (unless
    /// stopping at the first SOS) the entropy-coded data after each SOS, to EOI. Says how it ended.
    @discardableResult
    static func walk(
        _ d: [UInt8], stopAtFirstScan: Bool, _ body: (UInt8, ArraySlice<UInt8>) -> Void
    ) -> StructureEnd {
        var i = 2
        while true {
            guard i < d.count else { return .endOfData }
            guard d[i] == 0xFF else { return .malformed }
            var m: UInt8 = 0xFF
            while m == 0xFF {  // the marker byte, after any fill bytes
                i += 1
                guard i < d.count else { return .endOfData }
                m = d[i]
            }
            i += 1
            if m == 0xD9 { return .endOfImage }
            if (0xD0...0xD7).contains(m) || m == 0x01 { continue }
            if m == 0x00 || m == 0xD8 { return .malformed }
            guard i + 2 <= d.count else { return .endOfData }
            let len = Int(d[i]) << 8 | Int(d[i + 1])
            guard len >= 2 else { return .malformed }
            guard i + len <= d.count else { return .endOfData }
            if m == 0xDA && stopAtFirstScan { return .firstScan }
            body(m, d[(i + 2)..<(i + len)])
            i += len
            if m == 0xDA {
                // Entropy-coded data: inside it 0xFF is followed by a stuffed 0x00, a restart
                // marker or a fill byte; anything else starts the next marker.
                while true {
                    guard i + 1 < d.count else { return .endOfData }
                    let next = d[i + 1]
                    if d[i] == 0xFF && next != 0 && next != 0xFF && !(0xD0...0xD7).contains(next) { break }
                    i += 1
                }
            }
        }
    }
}
