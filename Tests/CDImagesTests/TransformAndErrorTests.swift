import CDImages
import Foundation
import Testing

@Suite("Flip and crops")
struct TransformTests {
    @Test("flippedHorizontally mirrors each row and is its own inverse")
    func flip() {
        let img = numbered(width: 5, height: 3)
        let f = img.flippedHorizontally()
        #expect((f.width, f.height) == (5, 3))
        for y in 0..<3 {
            for x in 0..<5 {
                let s = (y * 5 + (4 - x)) * 3, d = (y * 5 + x) * 3
                #expect(f.pixels[d..<(d + 3)] == img.pixels[s..<(s + 3)])
            }
        }
        #expect(f.flippedHorizontally() == img)
        let one = RGBImage(width: 1, height: 2, pixels: [1, 2, 3, 4, 5, 6])
        #expect(one.flippedHorizontally() == one)
    }

    @Test("cropped copies the given rectangle")
    func crop() {
        let img = numbered(width: 9, height: 7)
        let c = img.cropped(x: 2, y: 3, width: 4, height: 2)
        #expect((c.width, c.height) == (4, 2))
        #expect(Array(c.pixels[0..<3]) == [2, 3, UInt8((2 ^ 3) * 7)])
        let last = (1 * 4 + 3) * 3
        #expect(Array(c.pixels[last..<(last + 3)]) == [5, 4, UInt8((5 ^ 4) * 7)])
        #expect(img.cropped(x: 0, y: 0, width: 9, height: 7) == img)
        #expect(img.cropped(x: 8, y: 6, width: 1, height: 1).pixels == [8, 6, UInt8((8 ^ 6) * 7)])
    }

    /// torchvision CenterCrop: top = int(round((h − s) / 2)), left = int(round((w − s) / 2)),
    /// Python's round (half to even).
    @Test(
        "centerCroppedSquare: min side, torchvision rounding",
        arguments: [
            (10, 10, 0, 0), (12, 10, 1, 0), (13, 10, 2, 0), (15, 10, 2, 0), (17, 10, 4, 0), (11, 10, 0, 0),
            (10, 13, 0, 2), (10, 15, 0, 2), (10, 17, 0, 4), (3, 1, 1, 0), (1, 4, 0, 2),
        ])
    func centerCrop(_ w: Int, _ h: Int, _ left: Int, _ top: Int) {
        let img = numbered(width: w, height: h)
        let side = min(w, h)
        #expect(img.centerCroppedSquare() == img.cropped(x: left, y: top, width: side, height: side))
    }
}

@Suite("Decoding errors")
struct DecodeErrorTests {
    func failure(_ file: String) -> ImageError? {
        do {
            _ = try ImageDecoder.decode(path: Fixtures.path(file))
            return nil
        } catch let e as ImageError {
            return e
        } catch {
            return nil
        }
    }

    @Test(
        "broken, empty, foreign and oversized files are ImageErrors naming the file",
        arguments: [
            ("truncated.jpg", ImageError.Kind.truncated, "truncated"),
            ("truncated.png", .truncated, "truncated"),
            ("truncated.webp", .truncated, "truncated"),
            ("garbage.png", .corrupt, "PNG"),
            ("random.bin", .unrecognized, "not a JPEG, PNG or WebP"),
            ("notes.jpg", .unrecognized, "not a JPEG, PNG or WebP"),
            ("empty.jpg", .empty, "empty"),
            ("huge.jpg", .tooLarge, "30000×30000"),
            ("huge.png", .tooLarge, "12000×9000"),
            ("huge.webp", .tooLarge, "16384×16384"),
        ])
    func fixtureErrors(_ file: String, _ kind: ImageError.Kind, _ words: String) throws {
        let e = try #require(failure(file), "\(file) decoded")
        #expect(e.kind == kind, "\(file): \(e)")
        #expect(e.file == Fixtures.path(file))
        #expect(e.description.hasPrefix(Fixtures.path(file) + ": "))
        #expect(e.description.contains(words), "\(e)")
    }

    @Test("missing file and directory are unreadable, with the system's reason")
    func unreadable() throws {
        let missing = Fixtures.path("no-such-image.jpg")
        #expect(throws: ImageError(file: missing, kind: .unreadable, reason: "cannot open: No such file or directory")) {
            try ImageDecoder.decode(path: missing)
        }
        do {
            _ = try ImageDecoder.decode(path: Fixtures.directory)
            Issue.record("a directory decoded")
        } catch let e as ImageError {
            #expect(e.kind == .unreadable && e.description.contains(Fixtures.directory))
        }
    }

    @Test("other image formats are named as unsupported")
    func unsupportedFormats() {
        let gif = Array("GIF89a".utf8) + [1, 0, 1, 0, 0, 0, 0, 0x3B]
        #expect(throws: ImageError(file: "a.gif", kind: .unsupported, reason: "GIF images are not supported (JPEG, PNG and WebP are)")) {
            try ImageDecoder.decode(data: gif, name: "a.gif")
        }
        let avif: [UInt8] = [0, 0, 0, 0x1C] + Array("ftypavif".utf8) + [UInt8](repeating: 0, count: 20)
        #expect(throws: ImageError.self) { try ImageDecoder.decode(data: avif, name: "x.avif") }
    }

    @Test("every prefix of a valid file fails cleanly (no crash, an ImageError naming it)")
    func everyPrefix() throws {
        for file in ["baseline.jpg", "progressive.jpg", "rgba.png", "interlaced.png", "lossy_alpha.webp", "lossless_alpha.webp", "cmyk.jpg"] {
            let data = try Fixtures.bytes(file)
            var kinds: [ImageError.Kind: Int] = [:]
            for n in stride(from: 0, to: data.count - 2, by: max(1, data.count / 97)) {
                do {
                    _ = try ImageDecoder.decode(data: Array(data.prefix(n)), name: "cut-\(file)")
                    Issue.record("\(file) cut to \(n) bytes decoded")
                } catch let e as ImageError {
                    #expect(e.file == "cut-\(file)")
                    kinds[e.kind, default: 0] += 1
                }
            }
            #expect(kinds[.corrupt] == nil, "\(file): \(kinds)")
        }
    }

    @Test("flipped bits inside the data never crash")
    func corruptedBytes() throws {
        var rng = SplitMix(state: 0x5EED)
        for file in ["baseline.jpg", "rgba.png", "lossy.webp", "lossless_alpha.webp"] {
            let data = try Fixtures.bytes(file)
            for _ in 0..<200 {
                var d = data
                for _ in 0..<4 { d[Int.random(in: 2..<d.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng) }
                do {
                    let img = try ImageDecoder.decode(data: d, name: file)
                    #expect(img.pixels.count == img.width * img.height * 3)
                } catch let e as ImageError {
                    #expect(e.file == file)
                }
            }
        }
    }

    @Test("ImageError equality and description")
    func errorValue() {
        let e = ImageError(file: "a/b.jpg", kind: .corrupt, reason: "corrupt JPEG data (bad Huffman code)")
        #expect(e.description == "a/b.jpg: corrupt JPEG data (bad Huffman code)")
        #expect(e == ImageError(file: "a/b.jpg", kind: .corrupt, reason: "corrupt JPEG data (bad Huffman code)"))
        #expect(e != ImageError(file: "a/c.jpg", kind: .corrupt, reason: "corrupt JPEG data (bad Huffman code)"))
    }
}

/// Deterministic generator for the fuzz-style tests (SplitMix64).
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
