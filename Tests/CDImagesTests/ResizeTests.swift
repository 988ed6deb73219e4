import CDImages
import Foundation
import Testing

/// One entry of Fixtures/resize.json (Pillow's Image.resize of `pattern(source, seed)`).
struct ResizeReference: Decodable, Sendable, CustomTestStringConvertible {
    var source: [Int]
    var seed: Int
    var size: [Int]
    var filter: String
    var fnv1a64: String
    var row_step: Int
    var rows: String
    var testDescription: String { "\(source[0])×\(source[1]) → \(size[0])×\(size[1]) \(filter)" }
}

struct ResizeManifest: Decodable {
    var pillow: String
    var cases: [ResizeReference]
}

let resizeReferences: [ResizeReference] = {
    guard let data = try? Data(contentsOf: URL(fileURLWithPath: Fixtures.path("resize.json"))),
        let manifest = try? JSONDecoder().decode(ResizeManifest.self, from: data)
    else { return [] }
    return manifest.cases
}()

@Suite("Resize parity with Pillow")
struct ResizeParityTests {
    @Test("the manifest covers up, down, one-axis and odd sizes for all three filters")
    func manifestIsComplete() {
        #expect(resizeReferences.count == 30)
        for filter in ["bilinear", "bicubic", "lanczos"] {
            #expect(resizeReferences.contains { $0.filter == filter && $0.source == [37, 23] && $0.size == [64, 64] })
            #expect(resizeReferences.contains { $0.filter == filter && $0.source == [300, 200] && $0.size == [170, 170] })
            #expect(resizeReferences.contains { $0.filter == filter && $0.source == [512, 512] && $0.size == [614, 614] })
        }
    }

    @Test("Image.resize output, byte for byte", arguments: resizeReferences)
    func matchesPillow(_ r: ResizeReference) throws {
        let filter = try #require(ResizeFilter(rawValue: r.filter))
        let src = pattern(width: r.source[0], height: r.source[1], seed: r.seed)
        let out = src.resized(width: r.size[0], height: r.size[1], filter: filter)
        #expect(out.width == r.size[0] && out.height == r.size[1])
        // Sampled rows first, so a mismatch reports how far off it is.
        let rows = try Fixtures.rgb(r.rows)
        var sampled = [UInt8]()
        for y in stride(from: 0, to: out.height, by: r.row_step) {
            sampled += out.pixels[(y * out.width * 3)..<((y + 1) * out.width * 3)]
        }
        let diff = try #require(maxDifference(RGBImage(width: out.width, height: rows.height, pixels: sampled), rows))
        print("CDImages parity: resize \(r.testDescription) max |Δ| (sampled rows) = \(diff)")
        #expect(diff == 0, "\(r.testDescription): sampled rows differ by up to \(diff)")
        let hash = String(fnv1a64(out.pixels), radix: 16)
        #expect(String(repeating: "0", count: 16 - hash.count) + hash == r.fnv1a64, "\(r.testDescription): full-image hash")
    }
}

@Suite("Resize properties")
struct ResizePropertyTests {
    @Test("same size returns the image unchanged", arguments: [ResizeFilter.bilinear, .bicubic, .lanczos])
    func identity(_ f: ResizeFilter) {
        let img = pattern(width: 31, height: 17, seed: 9)
        #expect(img.resized(width: 31, height: 17, filter: f) == img)
    }

    @Test("a flat image stays flat at any size", arguments: [ResizeFilter.bilinear, .bicubic, .lanczos])
    func flat(_ f: ResizeFilter) {
        let img = RGBImage(width: 13, height: 7, pixels: Array(repeating: [12, 200, 255], count: 13 * 7).flatMap { $0 })
        for (w, h) in [(1, 1), (5, 3), (64, 40), (13, 30), (40, 7)] {
            let out = img.resized(width: w, height: h, filter: f)
            #expect(out.pixels == Array(repeating: [12, 200, 255], count: w * h).flatMap { $0 }, "\(w)×\(h)")
        }
    }

    @Test("channels are resampled independently (no R/G/B mixing or shifting)")
    func channelsIndependent() {
        let img = pattern(width: 45, height: 33, seed: 4)
        var red = img
        for i in stride(from: 0, to: red.pixels.count, by: 3) { red.pixels[i + 1] = 0; red.pixels[i + 2] = 0 }
        let a = img.resized(width: 20, height: 50, filter: .lanczos)
        let b = red.resized(width: 20, height: 50, filter: .lanczos)
        for i in stride(from: 0, to: a.pixels.count, by: 3) {
            #expect(a.pixels[i] == b.pixels[i])
            #expect(b.pixels[i + 1] == 0 && b.pixels[i + 2] == 0)
        }
    }

    @Test("resize commutes with a horizontal flip")
    func flipCommutes() throws {
        let img = pattern(width: 50, height: 30, seed: 2)
        for f in [ResizeFilter.bilinear, .bicubic, .lanczos] {
            let a = img.flippedHorizontally().resized(width: 23, height: 41, filter: f)
            let b = img.resized(width: 23, height: 41, filter: f).flippedHorizontally()
            #expect(try #require(maxDifference(a, b)) <= 1, "\(f)")
        }
    }

    @Test("512×512 decode and resize take milliseconds")
    func timing() throws {
        let src = pattern(width: 512, height: 512, seed: 1)
        let jpeg = Encode.jpeg(src, quality: 90)
        let png = Encode.png(src)
        func ms(_ body: () throws -> Void) rethrows -> Double {
            var best = Double.infinity
            for _ in 0..<5 {
                let t0 = DispatchTime.now().uptimeNanoseconds
                try body()
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
            }
            return best
        }
        let tJPEG = try ms { _ = try ImageDecoder.decode(data: jpeg, name: "t.jpg") }
        let tPNG = try ms { _ = try ImageDecoder.decode(data: png, name: "t.png") }
        let tDown = ms { _ = src.resized(width: 256, height: 256, filter: .bicubic) }
        let tUp = ms { _ = src.resized(width: 614, height: 614, filter: .lanczos) }
        let tBilinear = ms { _ = src.resized(width: 768, height: 768, filter: .bilinear) }
        let big = pattern(width: 3000, height: 2000, seed: 5)
        let tBigDown = ms { _ = big.resized(width: 768, height: 512, filter: .lanczos) }
        print(String(format: "CDImages timing (best of 5): JPEG 512² decode %.2f ms, PNG 512² decode %.2f ms, "
            + "bicubic 512²→256² %.2f ms, lanczos 512²→614² %.2f ms, bilinear 512²→768² %.2f ms, "
            + "lanczos 3000×2000→768×512 %.2f ms", tJPEG, tPNG, tDown, tUp, tBilinear, tBigDown))
        // Generous bounds (shared CI machines); the point is milliseconds, not seconds.
        #expect(tJPEG < 100 && tPNG < 100 && tDown < 100 && tUp < 100 && tBilinear < 100)
    }
}
