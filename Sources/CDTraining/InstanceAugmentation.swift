import CDImages
import CDTensor

/// diffusers' `CustomDiffusionDataset` instance transform (spec 2.4.1): optional flip, a random
/// scale, the image resized (bilinear) to scale × scale and either pasted at a random spot of a
/// mid-gray S × S canvas (scale ≤ S; the loss mask covers the pasted region shrunk by one latent
/// pixel) or cropped at a random spot (scale > S; mask all ones), and a caption prefix for small
/// ("a far away ", "very small ") and zoomed ("zoomed in ", "close up ") views.
public struct InstanceAugmentation: Sendable, Equatable {
    /// S, the training resolution in pixels.
    public let resolution: Int
    /// Pixels per latent pixel (8 for SD): the mask is (S / factor)².
    public let latentFactor: Int
    /// Random scale and caption words; off: scale = S (still pasted, so the mask excludes the border ring, as diffusers).
    public let augment: Bool
    /// Horizontal flip with probability 0.5.
    public let hflip: Bool
    /// Center-crop to a square before anything else (diffusers distorts non-square images instead).
    public let centerCrop: Bool

    public init(resolution: Int, latentFactor: Int, augment: Bool, hflip: Bool, centerCrop: Bool) {
        precondition(resolution > 0 && latentFactor > 0 && resolution % latentFactor == 0, "resolution must be a multiple of the latent factor")
        self.resolution = resolution
        self.latentFactor = latentFactor
        self.augment = augment
        self.hflip = hflip
        self.centerCrop = centerCrop
    }

    /// The random choices of one view.
    public struct Draw: Sendable, Equatable {
        public var flip: Bool
        public var scale: Int
        public var top: Int, left: Int
        public var prefix: String
        public init(flip: Bool, scale: Int, top: Int, left: Int, prefix: String) {
            self.flip = flip; self.scale = scale; self.top = top; self.left = left; self.prefix = prefix
        }
    }

    /// Draws a view as diffusers does: with probability 0.66 scale ∈ [S/3, S], else
    /// [⌊1.2 S⌋, ⌊1.4 S⌋) (integers); offsets uniform over the valid range.
    public func draw(_ rng: inout SplitMix64) -> Draw {
        let s = resolution
        let flip = hflip && rng.uniform() < 0.5
        var scale = s
        if augment {
            scale = rng.uniform() < 0.66 ? Self.integer(s / 3, s, &rng) : Self.integer(Int(1.2 * Double(s)), Int(1.4 * Double(s)) - 1, &rng)
        }
        let range = abs(scale - s)
        let top = Self.integer(0, range, &rng), left = Self.integer(0, range, &rng)
        var prefix = ""
        if Double(scale) < 0.6 * Double(s) {
            prefix = rng.uniform() < 0.5 ? "a far away " : "very small "
        } else if scale > s {
            prefix = rng.uniform() < 0.5 ? "zoomed in " : "close up "
        }
        return Draw(flip: flip, scale: scale, top: top, left: left, prefix: prefix)
    }

    /// The view's pixels [3, S, S] in [−1, 1] and loss mask [1, S/f, S/f].
    public func apply(_ d: Draw, to image: RGBImage) -> (pixels: Tensor, mask: Tensor) {
        let s = resolution
        var img = centerCrop ? image.centerCroppedSquare() : image
        if d.flip { img = img.flippedHorizontally() }
        let resized = img.resized(width: d.scale, height: d.scale, filter: .bilinear)
        let pixels = Tensor(zeros: [3, s, s])  // 0 = mid-gray in [−1, 1]
        if d.scale > s {
            let crop = resized.cropped(x: d.left, y: d.top, width: s, height: s)
            writeNormalized(crop, into: pixels, top: 0, left: 0)
        } else {
            writeNormalized(resized, into: pixels, top: d.top, left: d.left)
        }
        return (pixels, mask(d))
    }

    /// The loss mask of a view: all ones when cropped (scale > S), else ones on latent rows/columns
    /// ⌊top/f⌋ + 1 ..< ⌊(top + scale)/f⌋ − 1 (Python slice bounds, clamped) — spec 2.4.3.
    public func mask(_ d: Draw) -> Tensor {
        let m = resolution / latentFactor, f = latentFactor
        let mask = Tensor(zeros: [1, m, m])
        if d.scale > resolution { mask.fill(1); return mask }
        let rows = (d.top / f + 1)..<max(d.top / f + 1, min(m, (d.top + d.scale) / f - 1))
        let cols = (d.left / f + 1)..<max(d.left / f + 1, min(m, (d.left + d.scale) / f - 1))
        for r in rows where r < m { for c in cols where c < m { mask.pointer[r * m + c] = 1 } }
        return mask
    }

    /// Uniform integer in lo...hi.
    static func integer(_ lo: Int, _ hi: Int, _ rng: inout SplitMix64) -> Int {
        lo + Int(rng.next() % UInt64(hi - lo + 1))
    }
}

/// Writes `image` as x/127.5 − 1 into planes [3, S, S] at (top, left).
func writeNormalized(_ image: RGBImage, into t: Tensor, top: Int, left: Int) {
    let s = t.shape[2], plane = s * s
    image.pixels.withUnsafeBufferPointer { px in
        for y in 0..<image.height {
            let row = (top + y) * s + left
            for x in 0..<image.width {
                let p = (y * image.width + x) * 3
                for c in 0..<3 { t.pointer[c * plane + row + x] = Float(px[p + c]) / 127.5 - 1 }
            }
        }
    }
}
