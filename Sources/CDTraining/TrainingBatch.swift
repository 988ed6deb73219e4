import CDModels
import CDTensor

/// One micro-batch as the UNet sees it, instance samples first, then class (prior) samples.
public struct TrainingBatch: @unchecked Sendable {
    /// z0 = VAE posterior sample × scaling factor, [B, C, h, w].
    public var latents: Tensor
    /// ε, the noise added (and the epsilon target), [B, C, h, w].
    public var noise: Tensor
    /// Training timesteps in 0 ..< T, one per sample.
    public var timesteps: [Int]
    /// Valid-region mask at latent resolution [B, 1, h, w]; ones for class samples.
    public var mask: Tensor
    /// Padded prompt token ids [B][77].
    public var ids: [[Int]]
    /// The first `instanceCount` samples are instance samples; the rest are class samples.
    public var instanceCount: Int

    public init(latents: Tensor, noise: Tensor, timesteps: [Int], mask: Tensor, ids: [[Int]], instanceCount: Int) {
        self.latents = latents
        self.noise = noise
        self.timesteps = timesteps
        self.mask = mask
        self.ids = ids
        self.instanceCount = instanceCount
    }

    public var count: Int { latents.shape[0] }

    /// A batch from cached latent distributions: for the sample with global index i, the VAE
    /// posterior draw, ε and t come from `SplitMix64(seed ⊕ hash(i))`, so the stream of samples does
    /// not depend on how samples are grouped into batches, ranks or resumed runs.
    /// `examples`: (mean, std [C, h, w], mask [1, h, w], ids, global index), instance ones first.
    public static func draw(_ examples: [(mean: Tensor, std: Tensor, mask: Tensor, ids: [Int], index: Int)], instanceCount: Int,
                            scalingFactor: Float, trainTimesteps: Int, seed: UInt64) -> TrainingBatch {
        precondition(!examples.isEmpty, "a batch needs at least one example")
        let shape = examples[0].mean.shape, per = examples[0].mean.count, plane = examples[0].mask.count
        let b = examples.count
        let latents = Tensor(zeros: [b] + shape), noise = Tensor(zeros: [b] + shape)
        let mask = Tensor(zeros: [b, 1] + shape.dropFirst())
        var timesteps: [Int] = []
        for (s, e) in examples.enumerated() {
            precondition(e.mean.shape == shape && e.std.shape == shape && e.mask.count == plane, "examples of one batch must share a size")
            var rng = SplitMix64(seed: seed ^ (UInt64(truncatingIfNeeded: e.index) &* 0x9E37_79B9_7F4A_7C15))
            let z = latents.pointer + s * per, n = noise.pointer + s * per
            for i in 0..<per { z[i] = (e.mean.pointer[i] + e.std.pointer[i] * rng.normal()) * scalingFactor }
            for i in 0..<per { n[i] = rng.normal() }
            timesteps.append(Int(rng.next() % UInt64(trainTimesteps)))
            (mask.pointer + s * plane).update(from: e.mask.pointer, count: plane)
        }
        return TrainingBatch(latents: latents, noise: noise, timesteps: timesteps, mask: mask, ids: examples.map(\.ids),
                             instanceCount: instanceCount)
    }
}
