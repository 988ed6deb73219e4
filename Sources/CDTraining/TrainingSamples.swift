import CDImages
import CDModels
import CDTensor

/// Turns global sample indices into training batches: augmentation, VAE encoding with a latent
/// cache, caption prefixes and token ids.
///
/// The VAE encoder costs more than a UNet forward, so each instance image gets `views` augmented
/// views (drawn from the job seed, encoded the first time they are used, then kept as posterior
/// mean and std); sample g uses view hash(g) mod `views`. This bounds the augmentation diversity
/// to `views` scales/offsets per image (diffusers draws a new one every step); `views` = 0 draws
/// and encodes a fresh view for every sample. The posterior draw, noise and timestep are fresh per
/// sample either way (`TrainingBatch.draw`). Class images have one view each.
public final class TrainingSamples: @unchecked Sendable {
    public let dataset: ConceptDataset
    public let augmentation: InstanceAugmentation
    public let classTransform: ClassImageTransform
    public let views: Int
    let vae: AutoencoderKL
    let tokenizer: CLIPTokenizer
    let trainTimesteps: Int
    let seed: UInt64

    struct Encoded { let mean: Tensor, std: Tensor, mask: Tensor, prefix: String }
    private var instanceCache: [Int: Encoded] = [:]  // key: image · views + view
    private var classCache: [Int: Encoded] = [:]
    /// VAE encodes run so far (cache misses).
    public private(set) var encodes = 0

    public init(dataset: ConceptDataset, augmentation: InstanceAugmentation, classTransform: ClassImageTransform, views: Int,
                vae: AutoencoderKL, tokenizer: CLIPTokenizer, trainTimesteps: Int, seed: UInt64) {
        self.dataset = dataset
        self.augmentation = augmentation
        self.classTransform = classTransform
        self.views = views
        self.vae = vae
        self.tokenizer = tokenizer
        self.trainTimesteps = trainTimesteps
        self.seed = seed
    }

    /// The batch of global samples `indices`: their instance samples, then (with prior
    /// preservation) their class samples.
    public func batch(_ indices: [Int], withPrior: Bool) -> TrainingBatch {
        var examples: [(mean: Tensor, std: Tensor, mask: Tensor, ids: [Int], index: Int)] = []
        for g in indices {
            let item = dataset.itemIndex(g)
            let i = item % dataset.instances.count
            let e = instance(i, sample: g)
            examples.append((e.mean, e.std, e.mask, tokenizer.encodePadded(e.prefix + dataset.instances[i].prompt), g))
        }
        if withPrior {
            precondition(!dataset.classes.isEmpty, "prior preservation needs class images")
            for g in indices {
                let c = dataset.itemIndex(g) % dataset.classes.count
                let e = classSample(c)
                // A separate index range, so a class sample's noise and timestep are not its instance's.
                examples.append((e.mean, e.std, e.mask, tokenizer.encodePadded(dataset.classes[c].prompt), g + (1 << 40)))
            }
        }
        return TrainingBatch.draw(examples, instanceCount: indices.count, scalingFactor: vae.config.scalingFactor,
                                  trainTimesteps: trainTimesteps, seed: seed)
    }

    private func instance(_ i: Int, sample g: Int) -> Encoded {
        if views == 0 {
            var rng = SplitMix64(seed: mix(seed, 0x5A3D, g))
            return encode(dataset.instances[i].image, augmentation.draw(&rng))
        }
        var pick = SplitMix64(seed: mix(seed, 0x71E3, g))
        let v = Int(pick.next() % UInt64(views)), key = i * views + v
        if let hit = instanceCache[key] { return hit }
        var rng = SplitMix64(seed: mix(seed, 0xA11E, key))
        let e = encode(dataset.instances[i].image, augmentation.draw(&rng))
        instanceCache[key] = e
        return e
    }

    private func classSample(_ c: Int) -> Encoded {
        if let hit = classCache[c] { return hit }
        var rng = SplitMix64(seed: mix(seed, 0xC1A5, c))
        let pixels = classTransform.apply(to: dataset.classes[c].image, &rng)
        let m = augmentation.resolution / augmentation.latentFactor
        let mask = Tensor(zeros: [1, m, m])
        mask.fill(1)
        let e = encodePixels(pixels, mask: mask, prefix: "")
        classCache[c] = e
        return e
    }

    private func encode(_ image: RGBImage, _ d: InstanceAugmentation.Draw) -> Encoded {
        let (pixels, mask) = augmentation.apply(d, to: image)
        return encodePixels(pixels, mask: mask, prefix: d.prefix)
    }

    private func encodePixels(_ pixels: Tensor, mask: Tensor, prefix: String) -> Encoded {
        encodes += 1
        let posterior = vae.encode(pixels.reshaped([1] + pixels.shape))
        return Encoded(mean: posterior.mean[0].copy(), std: posterior.std[0].copy(), mask: mask, prefix: prefix)
    }

    private func mix(_ a: UInt64, _ tag: UInt64, _ b: Int) -> UInt64 {
        var r = SplitMix64(seed: a ^ (tag &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(truncatingIfNeeded: b) &* 0xBF58_476D_1CE4_E5B9))
        return r.next()
    }
}
