import CDImages
import CJPEG
import CPNG
import Foundation
import Testing

/// Fixtures written by tools/make_image_fixtures.py (Pillow), next to this file.
enum Fixtures {
    static let directory: String = {
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        return here.appendingPathComponent("Fixtures").path
    }()

    static func path(_ name: String) -> String { directory + "/" + name }

    static func bytes(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path(name))))
    }

    /// A `.rgb` file: "RGB8", width and height (u32 LE), then RGB bytes.
    static func rgb(_ name: String) throws -> RGBImage {
        let d = try bytes(name)
        guard d.count >= 12, d[0..<4].elementsEqual(Array("RGB8".utf8)) else {
            throw FixtureError(message: "\(name) is not an RGB8 file")
        }
        func u32(_ i: Int) -> Int { Int(d[i]) | Int(d[i + 1]) << 8 | Int(d[i + 2]) << 16 | Int(d[i + 3]) << 24 }
        let w = u32(4), h = u32(8)
        guard d.count == 12 + w * h * 3 else { throw FixtureError(message: "\(name): size mismatch") }
        return RGBImage(width: w, height: h, pixels: Array(d[12...]))
    }
}

struct FixtureError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// Largest per-channel difference, or nil when the sizes differ.
func maxDifference(_ a: RGBImage, _ b: RGBImage) -> Int? {
    guard a.width == b.width, a.height == b.height else { return nil }
    var m = 0
    for i in 0..<a.pixels.count { m = max(m, abs(Int(a.pixels[i]) - Int(b.pixels[i]))) }
    return m
}

/// The procedural resize source of tools/make_image_fixtures.py (`pattern`).
func pattern(width w: Int, height h: Int, seed: Int) -> RGBImage {
    var px = [UInt8](repeating: 0, count: w * h * 3)
    for y in 0..<h {
        for x in 0..<w {
            var r = (x * 255) / max(w - 1, 1)
            if ((x / 8) + (y / 8)) % 2 != 0 { r = 255 - r }
            let g = (y * 255) / max(h - 1, 1)
            let v = UInt32(truncatingIfNeeded: x * 73 + y * 151 + seed * 17) &* 2_654_435_761
            let i = (y * w + x) * 3
            px[i] = UInt8(r)
            px[i + 1] = UInt8(g)
            px[i + 2] = UInt8(v >> 24)
        }
    }
    return RGBImage(width: w, height: h, pixels: px)
}

func fnv1a64(_ bytes: [UInt8]) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in bytes {
        h ^= UInt64(b)
        h = h &* 0x100_0000_01B3
    }
    return h
}

/// A small image whose pixels all differ: (x, y, x^y·7).
func numbered(width w: Int, height h: Int) -> RGBImage {
    var px = [UInt8]()
    for y in 0..<h {
        for x in 0..<w { px += [UInt8(x), UInt8(y), UInt8(truncatingIfNeeded: (x ^ y) * 7)] }
    }
    return RGBImage(width: w, height: h, pixels: px)
}

/// Encoders for round-trip and timing tests (TurboJPEG, libpng simplified write).
enum Encode {
    static func jpeg(_ image: RGBImage, quality: Int32 = 95, subsampling: TJSAMP = TJSAMP_420) -> [UInt8] {
        let handle = tjInitCompress()!
        defer { tjDestroy(handle) }
        var buf: UnsafeMutablePointer<UInt8>? = nil
        var size: UInt = 0
        let rc = image.pixels.withUnsafeBufferPointer {
            tjCompress2(
                handle, $0.baseAddress, Int32(image.width), 0, Int32(image.height), Int32(TJPF_RGB.rawValue),
                &buf, &size, Int32(subsampling.rawValue), quality, 0)
        }
        precondition(rc == 0, String(cString: tjGetErrorStr2(handle)))
        defer { tjFree(buf) }
        return Array(UnsafeBufferPointer(start: buf, count: Int(size)))
    }

    static func png(_ image: RGBImage) -> [UInt8] {
        var img = png_image()
        img.version = cpng_image_version()
        img.width = UInt32(image.width)
        img.height = UInt32(image.height)
        img.format = cpng_format_rgb()
        var size = 0
        _ = image.pixels.withUnsafeBytes { png_image_write_to_memory(&img, nil, &size, 0, $0.baseAddress, 0, nil) }
        var out = [UInt8](repeating: 0, count: size)
        let ok = out.withUnsafeMutableBytes { dst in
            image.pixels.withUnsafeBytes { png_image_write_to_memory(&img, dst.baseAddress, &size, 0, $0.baseAddress, 0, nil) }
        }
        precondition(ok != 0)
        return Array(out.prefix(size))
    }
}
