import CDImages
import CDTensor

/// The images of a job as diffusers' `CustomDiffusionDataset` + shuffling DataLoader see them
/// (spec 2.5): instance images of every concept, shuffled once; class images in concept order; a
/// dataset of max(#instance, #class) items, item i pairing instance i mod #instance with class
/// i mod #class; each epoch visits the items in a fresh seeded order. Global sample g is item
/// `itemIndex(g)`; batches are consecutive runs of g (an epoch's tail joins the next epoch's head
/// instead of forming a short batch), so the stream does not depend on batch size or ranks.
public final class ConceptDataset: @unchecked Sendable {
    public struct Item: Sendable {
        public let image: RGBImage
        public let prompt: String
        /// Where it came from (file path), for messages.
        public let source: String
        public init(image: RGBImage, prompt: String, source: String) {
            self.image = image
            self.prompt = prompt
            self.source = source
        }
    }

    public let instances: [Item]
    public let classes: [Item]
    public let seed: UInt64
    private var permutations: [Int: [Int]] = [:]

    /// `instances` in concept order (shuffled here with `seed`, as diffusers shuffles once).
    public init(instances: [Item], classes: [Item], seed: UInt64) {
        precondition(!instances.isEmpty, "a job needs instance images")
        var rng = SplitMix64(seed: seed ^ 0x1A5_7A9C)
        self.instances = Self.shuffled(instances, &rng)
        self.classes = classes
        self.seed = seed
    }

    /// Items per epoch.
    public var length: Int { max(instances.count, classes.count) }

    /// The dataset item of global sample g.
    public func itemIndex(_ g: Int) -> Int {
        let epoch = g / length
        if permutations[epoch] == nil {
            if permutations.count > 4 { permutations.removeAll() }
            var rng = SplitMix64(seed: seed ^ (UInt64(epoch + 1) &* 0xD1B5_4A32_D192_ED03))
            permutations[epoch] = Self.shuffled(Array(0..<length), &rng)
        }
        return permutations[epoch]![g % length]
    }

    /// Fisher–Yates.
    static func shuffled<T>(_ items: [T], _ rng: inout SplitMix64) -> [T] {
        var a = items
        if a.count < 2 { return a }
        for i in stride(from: a.count - 1, to: 0, by: -1) {
            a.swapAt(i, Int(rng.next() % UInt64(i + 1)))
        }
        return a
    }
}
