import CDImages
import CDTensor

/// diffusers' class-image transform (spec 2.5): optional flip, resize of the shorter side to S
/// (bilinear, as torchvision's Resize on PIL images), then a center or random S × S crop; the mask
/// is all ones.
public struct ClassImageTransform: Sendable, Equatable {
    public let resolution: Int
    public let hflip: Bool
    public let centerCrop: Bool

    public init(resolution: Int, hflip: Bool, centerCrop: Bool) {
        self.resolution = resolution
        self.hflip = hflip
        self.centerCrop = centerCrop
    }

    /// Pixels [3, S, S] in [−1, 1]; the flip and crop offsets come from `rng`.
    public func apply(to image: RGBImage, _ rng: inout SplitMix64) -> Tensor {
        let s = resolution
        var img = image
        if hflip && rng.uniform() < 0.5 { img = img.flippedHorizontally() }
        // torchvision: the shorter side becomes S, the longer int(S · long / short).
        let (w, h) = (img.width, img.height)
        let (nw, nh) = w <= h ? (s, Int(Double(s) * Double(h) / Double(w))) : (Int(Double(s) * Double(w) / Double(h)), s)
        img = img.resized(width: nw, height: nh, filter: .bilinear)
        let (top, left): (Int, Int)
        if centerCrop {
            top = Int((Double(nh - s) / 2).rounded(.toNearestOrEven))
            left = Int((Double(nw - s) / 2).rounded(.toNearestOrEven))
        } else {
            top = InstanceAugmentation.integer(0, nh - s, &rng)
            left = InstanceAugmentation.integer(0, nw - s, &rng)
        }
        let pixels = Tensor(zeros: [3, s, s])
        writeNormalized(img.cropped(x: left, y: top, width: s, height: s), into: pixels, top: 0, left: 0)
        return pixels
    }
}
