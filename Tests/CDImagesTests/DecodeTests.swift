import CDImages
import CJPEG
import Foundation
import Testing

struct DecodeCase: Sendable, CustomTestStringConvertible {
    var file: String
    /// Largest per-channel difference allowed against Pillow's pixels.
    var tolerance: Int
    var testDescription: String { file }
}

/// Every decodable fixture against the pixels Pillow gives (see tools/make_image_fixtures.py).
let decodeCases: [DecodeCase] = [
    // JPEG: same libjpeg-turbo arithmetic (ISLOW IDCT, fancy upsampling) as Pillow's
    .init(file: "baseline.jpg", tolerance: 0),
    .init(file: "progressive.jpg", tolerance: 0),
    .init(file: "jpeg444.jpg", tolerance: 0),
    .init(file: "jpeg422.jpg", tolerance: 0),
    .init(file: "gray.jpg", tolerance: 0),
    .init(file: "extraneous.jpg", tolerance: 0),
    .init(file: "cmyk.jpg", tolerance: 0),
    .init(file: "ycck.jpg", tolerance: 0),
    .init(file: "exif1.jpg", tolerance: 0),
    .init(file: "exif2.jpg", tolerance: 0),
    .init(file: "exif3.jpg", tolerance: 0),
    .init(file: "exif4.jpg", tolerance: 0),
    .init(file: "exif5.jpg", tolerance: 0),
    .init(file: "exif6.jpg", tolerance: 0),
    .init(file: "exif7.jpg", tolerance: 0),
    .init(file: "exif8.jpg", tolerance: 0),
    .init(file: "xmp6.jpg", tolerance: 0),
    // PNG
    .init(file: "rgb.png", tolerance: 0),
    .init(file: "gray.png", tolerance: 0),
    .init(file: "gray1bit.png", tolerance: 0),
    .init(file: "rgba.png", tolerance: 0),
    .init(file: "la.png", tolerance: 0),
    .init(file: "palette.png", tolerance: 0),
    .init(file: "palette_trns.png", tolerance: 0),
    .init(file: "gray_trns.png", tolerance: 0),
    .init(file: "exif6.png", tolerance: 0),
    .init(file: "gamma.png", tolerance: 0),
    .init(file: "interlaced.png", tolerance: 0),
    .init(file: "rgb16.png", tolerance: 0),
    .init(file: "gray16.png", tolerance: 0),  // reference is v >> 8, not Pillow's clip (on purpose)
    .init(file: "rgba16.png", tolerance: 2),  // libpng rounds 16 → 8 bits, Pillow truncates
    // WebP
    .init(file: "lossy.webp", tolerance: 0),
    .init(file: "lossy_alpha.webp", tolerance: 0),
    .init(file: "lossless_alpha.webp", tolerance: 0),
    .init(file: "exif8.webp", tolerance: 0),
]

@Suite("Decoding against Pillow")
struct DecodeParityTests {
    @Test("pixels match Pillow's exif_transpose + convert(\"RGB\") (alpha over white)", arguments: decodeCases)
    func matchesPillow(_ c: DecodeCase) throws {
        let expected = try Fixtures.rgb(c.file + ".rgb")
        let image = try ImageDecoder.decode(path: Fixtures.path(c.file))
        #expect(image.width == expected.width && image.height == expected.height, "\(c.file) size")
        let diff = try #require(maxDifference(image, expected))
        print("CDImages parity: \(c.file) \(image.width)×\(image.height) max |Δ| vs Pillow = \(diff)")
        #expect(diff <= c.tolerance, "\(c.file): max difference \(diff) > \(c.tolerance)")
    }

    @Test("decode(data:name:) gives what decode(path:) gives")
    func dataAndPathAgree() throws {
        for file in ["baseline.jpg", "rgba.png", "lossy_alpha.webp", "exif6.jpg"] {
            let fromPath = try ImageDecoder.decode(path: Fixtures.path(file))
            let fromData = try ImageDecoder.decode(data: Fixtures.bytes(file), name: file)
            #expect(fromPath == fromData, "\(file)")
        }
    }

    @Test("format is sniffed from the bytes, not the name")
    func sniffsContent() throws {
        let png = try Fixtures.bytes("rgb.png")
        let asJPEG = try ImageDecoder.decode(data: png, name: "actually-a-png.jpg")
        #expect(asJPEG == (try Fixtures.rgb("rgb.png.rgb")))
        let webp = try Fixtures.bytes("lossy.webp")
        #expect(try ImageDecoder.decode(data: webp, name: "photo.png") == (try Fixtures.rgb("lossy.webp.rgb")))
    }
}

@Suite("EXIF orientation")
struct OrientationTests {
    /// The upright image every orientation fixture must come out as: orientation 1 is stored
    /// upright, and all fixtures store the same pixels.
    @Test("orientations 2…8 (JPEG APP1, both byte orders) turn the stored image upright", arguments: 2...8)
    func jpegOrientations(_ o: Int) throws {
        let stored = try ImageDecoder.decode(path: Fixtures.path("exif1.jpg"))
        let image = try ImageDecoder.decode(path: Fixtures.path("exif\(o).jpg"))
        let swaps = o >= 5
        #expect(image.width == (swaps ? stored.height : stored.width))
        #expect(image.height == (swaps ? stored.width : stored.height))
        // Where stored pixel (x, y) lands, per EXIF 2.3 / exif_transpose.
        let (w, h) = (stored.width, stored.height)
        for (x, y) in [(0, 0), (5, 1), (w - 1, 0), (3, h - 2), (w - 2, h - 1)] {
            let (ox, oy): (Int, Int)
            switch o {
            case 2: (ox, oy) = (w - 1 - x, y)
            case 3: (ox, oy) = (w - 1 - x, h - 1 - y)
            case 4: (ox, oy) = (x, h - 1 - y)
            case 5: (ox, oy) = (y, x)
            case 6: (ox, oy) = (h - 1 - y, x)
            case 7: (ox, oy) = (h - 1 - y, w - 1 - x)
            default: (ox, oy) = (y, w - 1 - x)
            }
            let s = (y * w + x) * 3, d = (oy * image.width + ox) * 3
            #expect(Array(stored.pixels[s..<(s + 3)]) == Array(image.pixels[d..<(d + 3)]), "orientation \(o) at \(x),\(y)")
        }
    }

    @Test("PNG eXIf, WebP EXIF and JPEG XMP orientation are applied")
    func otherContainers() throws {
        let upright = try ImageDecoder.decode(path: Fixtures.path("rgb.png"))
        let png = try ImageDecoder.decode(path: Fixtures.path("exif6.png"))
        #expect((png.width, png.height) == (upright.height, upright.width))
        let webp = try ImageDecoder.decode(path: Fixtures.path("exif8.webp"))
        #expect((webp.width, webp.height) == (upright.height, upright.width))
        let xmp = try ImageDecoder.decode(path: Fixtures.path("xmp6.jpg"))
        #expect(xmp == (try ImageDecoder.decode(path: Fixtures.path("exif6.jpg"))))
    }

    @Test("EXIF inside arbitrary JPEG data: little and big endian, SHORT/LONG, missing or bad")
    func handMadeExif() throws {
        let base = Encode.jpeg(numbered(width: 6, height: 4), quality: 100, subsampling: TJSAMP_444)
        let plain = try ImageDecoder.decode(data: base, name: "plain.jpg")
        func withApp1(_ payload: [UInt8]) -> [UInt8] {
            let len = payload.count + 2
            return [0xFF, 0xD8, 0xFF, 0xE1, UInt8(len >> 8), UInt8(len & 0xFF)] + payload + base[2...]
        }
        func tiff(bigEndian: Bool, type: UInt16, value: UInt32) -> [UInt8] {
            func u16(_ v: UInt16) -> [UInt8] { bigEndian ? [UInt8(v >> 8), UInt8(v & 0xFF)] : [UInt8(v & 0xFF), UInt8(v >> 8)] }
            func u32(_ v: UInt32) -> [UInt8] {
                let b = [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
                return bigEndian ? b : b.reversed()
            }
            let value4: [UInt8] = type == 3 ? u16(UInt16(value)) + [0, 0] : u32(value)
            return Array("Exif\0\0".utf8) + (bigEndian ? [0x4D, 0x4D] : [0x49, 0x49]) + u16(42) + u32(8)
                + u16(1) + u16(0x0112) + u16(type) + u32(1) + value4 + u32(0)
        }
        for big in [false, true] {
            for type: UInt16 in [3, 4] {
                let img = try ImageDecoder.decode(data: withApp1(tiff(bigEndian: big, type: type, value: 6)), name: "t.jpg")
                #expect((img.width, img.height) == (4, 6), "big \(big) type \(type)")
                #expect(img == plain.transposedForTest(6))
            }
        }
        // Out-of-range orientation, a garbage TIFF header and a truncated IFD are ignored (Pillow's
        // exif_transpose ignores values outside 2…8).
        #expect(try ImageDecoder.decode(data: withApp1(tiff(bigEndian: false, type: 3, value: 9)), name: "t.jpg") == plain)
        #expect(try ImageDecoder.decode(data: withApp1(Array("Exif\0\0XX*\0garbage".utf8)), name: "t.jpg") == plain)
        #expect(try ImageDecoder.decode(data: withApp1(Array(tiff(bigEndian: true, type: 3, value: 3).prefix(20))), name: "t.jpg") == plain)
    }
}

extension RGBImage {
    /// Orientation 6 (rotate 90° clockwise) written out naively, for cross-checking.
    func transposedForTest(_ o: Int) -> RGBImage {
        precondition(o == 6)
        var out = [UInt8](repeating: 0, count: pixels.count)
        for y in 0..<width {
            for x in 0..<height {
                let s = ((height - 1 - x) * width + y) * 3, d = (y * height + x) * 3
                out[d..<(d + 3)] = pixels[s..<(s + 3)]
            }
        }
        return RGBImage(width: height, height: width, pixels: out)
    }
}

@Suite("Decoding round trips")
struct RoundTripTests {
    @Test("lossless PNG round trip is exact; JPEG q100 4:4:4 is close")
    func roundTrips() throws {
        let src = pattern(width: 67, height: 45, seed: 3)
        #expect(try ImageDecoder.decode(data: Encode.png(src), name: "rt.png") == src)
        let smooth = numbered(width: 64, height: 48)
        let jpeg = try ImageDecoder.decode(data: Encode.jpeg(smooth, quality: 100, subsampling: TJSAMP_444), name: "rt.jpg")
        #expect((jpeg.width, jpeg.height) == (64, 48))
        #expect(try #require(maxDifference(jpeg, smooth)) <= 8)
    }

    @Test("gray → R = G = B; palette and 1-bit PNGs expand to RGB")
    func grayIsNeutral() throws {
        for file in ["gray.jpg", "gray.png", "gray1bit.png", "gray16.png"] {
            let img = try ImageDecoder.decode(path: Fixtures.path(file))
            var neutral = true
            for i in stride(from: 0, to: img.pixels.count, by: 3)
            where img.pixels[i] != img.pixels[i + 1] || img.pixels[i] != img.pixels[i + 2] {
                neutral = false
            }
            #expect(neutral, "\(file)")
        }
        let bits = try ImageDecoder.decode(path: Fixtures.path("gray1bit.png"))
        #expect(Set(bits.pixels).isSubset(of: [0, 255]))
    }

    @Test("alpha is composited over white: transparent → white, opaque → the colour")
    func alphaOverWhite() throws {
        // rgba.png: columns 0…4 fully transparent, the last 5 fully opaque, rows 18… half.
        let img = try ImageDecoder.decode(path: Fixtures.path("rgba.png"))
        let opaque = try ImageDecoder.decode(path: Fixtures.path("rgb.png"))
        for y in 0..<18 {
            for x in 0..<5 {
                let i = (y * img.width + x) * 3
                #expect(img.pixels[i..<(i + 3)].allSatisfy { $0 == 255 })
            }
            for x in (img.width - 5)..<img.width {
                let i = (y * img.width + x) * 3
                #expect(img.pixels[i..<(i + 3)] == opaque.pixels[i..<(i + 3)])
            }
        }
    }
}
