import CDImages
import CDTensor
@testable import CDTraining
import Testing

@Suite struct InstanceAugmentationTests {
    let sd = InstanceAugmentation(resolution: 512, latentFactor: 8, augment: true, hflip: false, centerCrop: false)

    private func ones(_ t: Tensor) -> Int { t.array.filter { $0 == 1 }.count }

    /// The spec's worked examples (custom-diffusion-spec 2.4.3, diffusers' slicing).
    @Test func workedMaskExamples() {
        let m = sd.mask(.init(flip: false, scale: 256, top: 100, left: 40, prefix: ""))
        #expect(m.shape == [1, 64, 64])
        #expect(ones(m) == 900)
        for r in 0..<64 {
            for c in 0..<64 {
                let inside = (13..<43).contains(r) && (6..<36).contains(c)
                #expect(m.pointer[r * 64 + c] == (inside ? 1 : 0), "mask[\(r), \(c)]")
            }
        }
        // No augmentation: scale = S pasted at (0, 0) still drops the outer ring of latent pixels.
        let full = sd.mask(.init(flip: false, scale: 512, top: 0, left: 0, prefix: ""))
        #expect(ones(full) == 3844)
        #expect(full.pointer[0] == 0 && full.pointer[65] == 1 && full.pointer[63 * 64 + 63] == 0)
        // Zoomed (cropped) views keep every latent pixel.
        #expect(ones(sd.mask(.init(flip: false, scale: 700, top: 50, left: 120, prefix: ""))) == 4096)
        // The smallest scale in the bottom-right corner: rows and columns 43 ..< 63.
        #expect(ones(sd.mask(.init(flip: false, scale: 170, top: 342, left: 342, prefix: ""))) == 20 * 20)
        // A paste of two latent pixels leaves nothing.
        let tiny = InstanceAugmentation(resolution: 32, latentFactor: 8, augment: true, hflip: false, centerCrop: false)
        #expect(ones(tiny.mask(.init(flip: false, scale: 16, top: 8, left: 0, prefix: ""))) == 0)
    }

    /// Scales, offsets and caption words follow diffusers' distribution.
    @Test func drawsFollowDiffusers() {
        var rng = SplitMix64(seed: 1)
        var small = 0, mid = 0, zoom = 0
        let n = 4000
        for _ in 0..<n {
            let d = sd.draw(&rng)
            #expect((170...512).contains(d.scale) || (614...715).contains(d.scale), "scale \(d.scale)")
            let range = abs(d.scale - 512)
            #expect((0...range).contains(d.top) && (0...range).contains(d.left))
            #expect(!d.flip)
            if Double(d.scale) < 0.6 * 512 {
                small += 1
                #expect(["a far away ", "very small "].contains(d.prefix))
            } else if d.scale > 512 {
                zoom += 1
                #expect(["zoomed in ", "close up "].contains(d.prefix))
            } else {
                mid += 1
                #expect(d.prefix.isEmpty)
            }
        }
        // Expected shares (spec 2.4.1): 0.266, 0.394, 0.34.
        #expect(abs(Double(small) / Double(n) - 0.266) < 0.03 && abs(Double(mid) / Double(n) - 0.394) < 0.03
                && abs(Double(zoom) / Double(n) - 0.34) < 0.03, "\(small) \(mid) \(zoom)")
        let plain = InstanceAugmentation(resolution: 512, latentFactor: 8, augment: false, hflip: true, centerCrop: false)
        var flips = 0
        for _ in 0..<1000 {
            let d = plain.draw(&rng)
            #expect(d.scale == 512 && d.top == 0 && d.left == 0 && d.prefix.isEmpty)
            if d.flip { flips += 1 }
        }
        #expect((400...600).contains(flips), "hflip should flip about half: \(flips)")
    }

    /// Pasting writes the resized image at (top, left) over a mid-gray (0) canvas; cropping fills it.
    @Test func applyPastesAndCrops() {
        let aug = InstanceAugmentation(resolution: 32, latentFactor: 8, augment: true, hflip: false, centerCrop: false)
        let red = RGBImage(width: 16, height: 16, pixels: Array(repeating: [255, 0, 0], count: 256).flatMap { $0 })
        let (pixels, mask) = aug.apply(.init(flip: false, scale: 16, top: 8, left: 4, prefix: ""), to: red)
        #expect(pixels.shape == [3, 32, 32] && mask.shape == [1, 4, 4])
        for y in 0..<32 {
            for x in 0..<32 {
                let inside = (8..<24).contains(y) && (4..<20).contains(x)
                #expect(pixels.pointer[y * 32 + x] == (inside ? 1 : 0) && pixels.pointer[1024 + y * 32 + x] == (inside ? -1 : 0),
                        "pixel (\(x), \(y))")
            }
        }
        let (zoomed, full) = aug.apply(.init(flip: false, scale: 40, top: 3, left: 5, prefix: "close up "), to: red)
        #expect(zoomed.array.allSatisfy { $0 == 1 || $0 == -1 } && full.array.allSatisfy { $0 == 1 })
    }
}

@Suite struct ConceptDatasetTests {
    private func items(_ n: Int, _ prompt: String) -> [ConceptDataset.Item] {
        (0..<n).map { ConceptDataset.Item(image: RGBImage(width: 1, height: 1, pixels: [UInt8($0), 0, 0]), prompt: prompt, source: "\(prompt)-\($0)") }
    }

    @Test func epochsVisitEveryItemOnceInASeededOrder() {
        let d = ConceptDataset(instances: items(3, "i"), classes: items(5, "c"), seed: 9)
        #expect(d.length == 5)
        for epoch in 0..<3 {
            let order = (0..<5).map { d.itemIndex(epoch * 5 + $0) }
            #expect(order.sorted() == Array(0..<5), "epoch \(epoch): \(order)")
        }
        let again = ConceptDataset(instances: items(3, "i"), classes: items(5, "c"), seed: 9)
        #expect((0..<15).map(d.itemIndex) == (0..<15).map(again.itemIndex))
        #expect(d.instances.map(\.source) == again.instances.map(\.source))
        let other = ConceptDataset(instances: items(3, "i"), classes: items(5, "c"), seed: 10)
        #expect((0..<15).map(d.itemIndex) != (0..<15).map(other.itemIndex))
        #expect(Set(d.instances.map(\.source)) == Set(["i-0", "i-1", "i-2"]))
    }
}
