import CPNG

/// PNG through libpng's simplified API (`png_image_*`: errors come back as return codes and a
/// message, no longjmp). The chunk list is walked first, for `eXIf`/XMP orientation and to drop
/// the colour-space chunks (`gAMA`, `cHRM`, `sRGB`, `iCCP`): libpng would gamma-correct to sRGB
/// from them, Pillow ignores them, so without them libpng takes the samples as they are.
enum PNGDecoder {
    static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    static func decode(_ original: [UInt8], name: String) throws -> RGBImage {
        let chunks = scanChunks(original)
        let data = chunks.stripped ?? original

        var image = png_image()
        image.version = cpng_image_version()
        defer { png_image_free(&image) }
        func failure(_ stage: String) -> ImageError {
            let m = message(image)
            let truncated = chunks.runsOut || m.contains("end of data") || m.contains("Not enough")
            return ImageError(
                file: name, kind: truncated ? .truncated : .corrupt,
                reason: truncated ? "truncated PNG (\(m))" : "corrupt PNG \(stage) (\(m))")
        }

        return try data.withUnsafeBufferPointer { buf -> RGBImage in
            guard png_image_begin_read_from_memory(&image, buf.baseAddress, buf.count) != 0 else {
                throw failure("header")
            }
            let w = Int(image.width), h = Int(image.height)
            try ImageDecoder.checkSize(width: w, height: h, name: name, format: "PNG")
            let fileFormat = image.format
            let hasAlpha = fileFormat & UInt32(PNG_FORMAT_FLAG_ALPHA) != 0
            let sixteenBit = fileFormat & UInt32(PNG_FORMAT_FLAG_LINEAR) != 0
            var rgb = [UInt8](repeating: 0, count: w * h * 3)

            if sixteenBit && !hasAlpha {
                // Without PNG_IMAGE_FLAG_16BIT_sRGB (and without gAMA/sRGB, dropped above) libpng
                // takes 16-bit samples as linear; asking for linear output then hands them over
                // unchanged, and the high byte is Pillow's "RGB;16B" reading.
                image.format = UInt32(PNG_FORMAT_FLAG_LINEAR | PNG_FORMAT_FLAG_COLOR)
                var wide = [UInt16](repeating: 0, count: w * h * 3)
                let ok = wide.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) }
                guard ok != 0 else { throw failure("data") }
                for i in 0..<(w * h * 3) { rgb[i] = UInt8(truncatingIfNeeded: wide[i] >> 8) }
            } else if hasAlpha {
                // 16-bit with alpha: libpng scales to 8 bits (rounding, v·255/65535) and the
                // composite follows; Pillow keeps high bytes, so this can differ by a level or two.
                image.format = UInt32(PNG_FORMAT_FLAG_COLOR | PNG_FORMAT_FLAG_ALPHA)
                image.flags |= UInt32(PNG_IMAGE_FLAG_16BIT_sRGB)
                var rgba = [UInt8](repeating: 0, count: w * h * 4)
                let ok = rgba.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) }
                guard ok != 0 else { throw failure("data") }
                rgba.withUnsafeBufferPointer { s in
                    rgb.withUnsafeMutableBufferPointer { d in
                        PixelMath.compositeRGBA(s.baseAddress!, into: d.baseAddress!, count: w * h)
                    }
                }
            } else {
                image.format = UInt32(PNG_FORMAT_FLAG_COLOR)
                image.flags |= UInt32(PNG_IMAGE_FLAG_16BIT_sRGB)
                let ok = rgb.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) }
                guard ok != 0 else { throw failure("data") }
            }

            var result = RGBImage(width: w, height: h, pixels: rgb)
            if let o = chunks.metadata.orientation, let t = RGBImage.Transpose(exifOrientation: o) {
                result = result.transposed(t)
            }
            return result
        }
    }

    static func message(_ image: png_image) -> String {
        var m = image.message
        return withUnsafeBytes(of: &m) { raw in
            let bytes = raw.prefix { $0 != 0 }
            return bytes.isEmpty ? "unknown error" : String(decoding: bytes, as: UTF8.self)
        }
    }

    struct Chunks {
        /// The file without its colour-space chunks, when it had any.
        var stripped: [UInt8]?
        var metadata = OrientationMetadata()
        /// The chunk list reaches IEND inside the data.
        var complete = false
        /// Well-formed chunks (letter types) up to where the data ends, before IEND.
        var runsOut = false
    }

    static let dropped: Set<String> = ["gAMA", "cHRM", "sRGB", "iCCP"]

    static func scanChunks(_ d: [UInt8]) -> Chunks {
        var result = Chunks()
        var keep: [Range<Int>] = []
        var copyFrom = 0
        func isLetter(_ b: UInt8) -> Bool { (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b) }
        var i = signature.count
        while true {
            guard i + 8 <= d.count else {
                result.runsOut = d[i..<min(i + 8, d.count)].dropFirst(4).allSatisfy(isLetter)
                break
            }
            let length = Int(d[i]) << 24 | Int(d[i + 1]) << 16 | Int(d[i + 2]) << 8 | Int(d[i + 3])
            guard d[(i + 4)..<(i + 8)].allSatisfy(isLetter), length <= Int(Int32.max) else { break }
            let type = String(decoding: d[(i + 4)..<(i + 8)], as: UTF8.self)
            let end = i + 12 + length
            guard end <= d.count else {
                result.runsOut = true
                break
            }
            let payload = d[(i + 8)..<(i + 8 + length)]
            switch type {
            case "eXIf":
                result.metadata.exif = payload
            case "iTXt", "tEXt":
                if let xmp = xmpText(type: type, payload) { result.metadata.xmp = xmp }
            case "IEND":
                result.complete = true
            default:
                break
            }
            if dropped.contains(type) {
                keep.append(copyFrom..<i)
                copyFrom = end
            }
            i = end
            if result.complete { break }
        }
        if !keep.isEmpty {
            var out = [UInt8]()
            out.reserveCapacity(d.count)
            for r in keep { out += d[r] }
            out += d[copyFrom...]
            result.stripped = out
        }
        return result
    }

    /// The text of an uncompressed iTXt / a tEXt chunk whose keyword is "XML:com.adobe.xmp".
    static func xmpText(type: String, _ p: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        let keyword = Array("XML:com.adobe.xmp".utf8)
        guard OrientationMetadata.hasPrefix(p, keyword + [0]) else { return nil }
        var rest = p.dropFirst(keyword.count + 1)
        if type == "tEXt" { return rest }
        guard rest.count >= 2, rest[rest.startIndex] == 0 else { return nil }  // compressed: skipped
        rest = rest.dropFirst(2)
        for _ in 0..<2 {  // language tag, translated keyword
            guard let nul = rest.firstIndex(of: 0) else { return nil }
            rest = rest[(nul + 1)...]
        }
        return rest
    }
}
