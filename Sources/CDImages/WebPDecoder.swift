import CWebP

/// WebP (lossy, lossless, with or without alpha) through libwebp: `WebPGetFeatures` for the
/// header, `WebPDecode` into memory owned here (RGB, or straight-alpha RGBA composited onto white
/// when the file has alpha; libwebp's default fancy upsampling, as Pillow's decoder gets it).
/// EXIF/XMP orientation comes from the RIFF chunks. Animated files are refused.
enum WebPDecoder {
    static func decode(_ data: [UInt8], name: String) throws -> RGBImage {
        let chunks = scanChunks(data)
        var config = WebPDecoderConfig()
        guard WebPInitDecoderConfig(&config) != 0 else {
            throw ImageError(file: name, kind: .corrupt, reason: "libwebp version mismatch")
        }
        let header = data.withUnsafeBufferPointer { WebPGetFeatures($0.baseAddress, $0.count, &config.input) }
        guard header == VP8_STATUS_OK else {
            throw error(header, chunks: chunks, name: name, stage: "header")
        }
        if config.input.has_animation != 0 {
            throw ImageError(file: name, kind: .unsupported, reason: "animated WebP is not supported")
        }
        let w = Int(config.input.width), h = Int(config.input.height)
        try ImageDecoder.checkSize(width: w, height: h, name: name, format: "WebP")

        // Opaque files straight to RGB; with alpha to straight RGBA, then over white.
        let alpha = config.input.has_alpha != 0
        var decoded = [UInt8](repeating: 0, count: w * h * (alpha ? 4 : 3))
        let status = data.withUnsafeBufferPointer { src in
            decoded.withUnsafeMutableBufferPointer { dst -> VP8StatusCode in
                config.output.colorspace = alpha ? MODE_RGBA : MODE_RGB
                config.output.is_external_memory = 1
                config.output.u.RGBA.rgba = dst.baseAddress
                config.output.u.RGBA.stride = Int32(w * (alpha ? 4 : 3))
                config.output.u.RGBA.size = dst.count
                let s = WebPDecode(src.baseAddress, src.count, &config)
                WebPFreeDecBuffer(&config.output)  // external memory: releases nothing of ours
                return s
            }
        }
        guard status == VP8_STATUS_OK else {
            throw error(status, chunks: chunks, name: name, stage: "data")
        }
        var rgb = decoded
        if alpha {
            rgb = [UInt8](repeating: 0, count: w * h * 3)
            decoded.withUnsafeBufferPointer { s in
                rgb.withUnsafeMutableBufferPointer { d in
                    PixelMath.compositeRGBA(s.baseAddress!, into: d.baseAddress!, count: w * h)
                }
            }
        }
        var image = RGBImage(width: w, height: h, pixels: rgb)
        if let o = chunks.metadata.orientation, let t = RGBImage.Transpose(exifOrientation: o) {
            image = image.transposed(t)
        }
        return image
    }

    static func error(_ status: VP8StatusCode, chunks: Chunks, name: String, stage: String) -> ImageError {
        let what: String
        switch status {
        case VP8_STATUS_OUT_OF_MEMORY: what = "out of memory"
        case VP8_STATUS_INVALID_PARAM: what = "invalid parameter"
        case VP8_STATUS_BITSTREAM_ERROR: what = "bitstream error"
        case VP8_STATUS_UNSUPPORTED_FEATURE: what = "unsupported feature"
        case VP8_STATUS_SUSPENDED: what = "suspended"
        case VP8_STATUS_USER_ABORT: what = "aborted"
        case VP8_STATUS_NOT_ENOUGH_DATA: what = "not enough data"
        default: what = "status \(status.rawValue)"
        }
        if status == VP8_STATUS_NOT_ENOUGH_DATA || chunks.truncated {
            return ImageError(file: name, kind: .truncated, reason: "truncated WebP (\(what))")
        }
        if status == VP8_STATUS_UNSUPPORTED_FEATURE {
            return ImageError(file: name, kind: .unsupported, reason: "unsupported WebP variant (\(what))")
        }
        return ImageError(file: name, kind: .corrupt, reason: "corrupt WebP \(stage) (\(what))")
    }

    struct Chunks {
        var metadata = OrientationMetadata()
        /// The RIFF size or a chunk runs past the end of the data.
        var truncated = false
    }

    static func scanChunks(_ d: [UInt8]) -> Chunks {
        var result = Chunks()
        func u32(_ i: Int) -> Int {
            Int(d[i]) | Int(d[i + 1]) << 8 | Int(d[i + 2]) << 16 | Int(d[i + 3]) << 24
        }
        guard d.count >= 12 else {
            result.truncated = true
            return result
        }
        let riffEnd = 8 + u32(4)
        if riffEnd > d.count { result.truncated = true }
        let end = min(riffEnd, d.count)
        var i = 12
        while i + 8 <= end {
            let fourcc = String(decoding: d[i..<(i + 4)], as: UTF8.self)
            let size = u32(i + 4)
            guard i + 8 + size <= end else {
                result.truncated = true
                break
            }
            let payload = d[(i + 8)..<(i + 8 + size)]
            if fourcc == "EXIF" { result.metadata.exif = payload }
            if fourcc == "XMP " { result.metadata.xmp = payload }
            i += 8 + size + (size & 1)
        }
        return result
    }
}
