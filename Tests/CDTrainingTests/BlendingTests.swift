import CDTestSupport
import CDModels
import CDTensor
import CDTraining
import Foundation
import Testing

/// Several concept files on one pipeline (spec §8.2, §8.3): deltas add, W = W0 + Σ s_i·Δ_i, as the
/// A1111 extension's `<delta:NAME:s>` tags; full weights replace; tokens of every file are added.
@Suite struct BlendingTests {
    typealias F = CompressionFixture

    enum Kind: String, CaseIterable, Sendable { case bundle, a1111 }

    /// Writes `concept` as `kind` into `dir` and loads it: for A1111 the delta file with the token
    /// file's rows added (the two files `cdtrainerd sample --concept` would be given).
    static func written(_ concept: TrainedConcept, as kind: Kind, name: String, in dir: URL) throws -> LoadedConcept {
        switch kind {
        case .bundle:
            let url = dir.appendingPathComponent(name + ".concept.safetensors")
            try ConceptBundle.write(concept, to: url)
            return try ConceptFile.load(url.path)
        case .a1111:
            try A1111ConceptFormat.write(concept, name: name, to: dir)
            var loaded = try ConceptFile.load(dir.appendingPathComponent(name + ".delta.safetensors").path)
            loaded.tokens = try ConceptFile.load(dir.appendingPathComponent(concept.tokens[0].name + ".safetensors").path).tokens
            return loaded
        }
    }

    /// Two concepts with distinct tokens, written as `kinds`, loaded, keys in diffusers spelling.
    static func pair(_ kinds: (Kind, Kind), in dir: URL) throws -> (UNet2DConditionModel, [LoadedConcept]) {
        let unet = try F.unet()
        let first = try F.synthetic(unet, seed: 21, token: "<new1>"), second = try F.synthetic(unet, seed: 22, token: "<new2>")
        let loaded = try [written(first, as: kinds.0, name: "first", in: dir), written(second, as: kinds.1, name: "second", in: dir)]
        return (unet, try loaded.map { try $0.resolvingKeys(for: unet.config) })
    }

    static let strengths: [Float] = [0.7, -0.4]

    @Test(arguments: [(Kind.bundle, Kind.bundle), (.bundle, .a1111), (.a1111, .a1111)])
    func twoDeltaFilesAddWithTheirStrengths(first: Kind, second: Kind) throws {
        let dir = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let kinds = (first, second)
        let (unet, concepts) = try Self.pair(kinds, in: dir)
        let session = ConceptPipeline(try F.pipeline())
        for (concept, s) in zip(concepts, Self.strengths) { try session.apply(concept, strength: s) }

        let weights = session.pipeline.models.unet.weights
        let (d1, d2) = (concepts[0].deltas, concepts[1].deltas)
        #expect(!d1.isEmpty && Set(d1.keys) == Set(d2.keys) && concepts.allSatisfy { $0.weights.isEmpty })
        var worst = 0.0
        for key in d1.keys.sorted() {
            let w0 = unet.weights[key], got = weights[key], (a, b) = (d1[key]!, d2[key]!)
            for i in 0..<got.count {
                let terms = [Double(w0.pointer[i]), Double(Self.strengths[0] * a.pointer[i]), Double(Self.strengths[1]) * Double(b.pointer[i])]
                // Two products and two sums in float32: a few roundings of the largest magnitude.
                let expected = Double(w0.pointer[i]) + Double(Self.strengths[0]) * Double(a.pointer[i]) + Double(Self.strengths[1]) * Double(b.pointer[i])
                let tolerance = 4 * 0x1p-24 * terms.map(abs).reduce(0, +)
                worst = max(worst, abs(Double(got.pointer[i]) - expected) / tolerance)
            }
        }
        #expect(worst <= 1, "\(kinds): max |W − (W0 + s1·Δ1 + s2·Δ2)| is \(worst)× the float32 tolerance 4·2⁻²⁴·(|W0| + |s1·Δ1| + |s2·Δ2|)")
        let untouched = unet.weights.tensors.filter { d1[$0.key] == nil }
        #expect(untouched.allSatisfy { weights[$0.key].pointer == session.baseUNet.weights[$0.key].pointer }, "no other weight changes")

        let tokenizer = session.pipeline.tokenizer, rows = try #require(session.pipeline.tokenEmbeddings)
        let ids = try ["<new1>", "<new2>"].map { try #require(tokenizer.id(of: $0)) }
        #expect(ids == [tokenizer.baseVocabularySize, tokenizer.baseVocabularySize + 1] && rows.rowIds == ids)
        #expect(rows.rows.array == concepts.flatMap { $0.tokens[0].embedding.array })
    }

    /// Sampling with both files at s1, s2 vs one concept whose delta is s1·Δ1 + s2·Δ2 (built here,
    /// rounded once to float32): the weights then differ by float32 rounding only.
    @Test func blendedSamplingEqualsTheCombinedDelta() throws {
        let dir = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (_, concepts) = try Self.pair((.bundle, .a1111), in: dir)
        let blended = try F.pipeline()
        let session = ConceptPipeline(blended)
        for (concept, s) in zip(concepts, Self.strengths) { try session.apply(concept, strength: s) }

        var combined = LoadedConcept(format: .a1111Delta, source: "s1·Δ1 + s2·Δ2 in memory")
        for (key, a) in concepts[0].deltas {
            let b = concepts[1].deltas[key]!
            combined.deltas[key] = Tensor((0..<a.count).map {
                Float(Double(Self.strengths[0]) * Double(a.pointer[$0]) + Double(Self.strengths[1]) * Double(b.pointer[$0]))
            }, shape: a.shape)
        }
        combined.tokens = concepts.flatMap(\.tokens)
        let single = try F.pipeline()
        try single.apply(combined)

        let prompt = "photo of a <new1> dog wearing a <new2> hat"
        let (a, b) = (try F.sample(blended, prompt: prompt), try F.sample(single, prompt: prompt))
        let gap = F.maxAbsDifference(a, b)
        print("blended (two files) vs combined delta (one): max |Δpixel| \(gap), PSNR \(F.psnr(a, b)) dB")
        #expect(gap <= 1e-4, "max |Δpixel| \(gap) between blended files and the combined delta (tolerance 1e-4)")
        // The blend is not the base: the K/V deltas do change the image.
        let tokensOnly = try F.pipeline()
        var embeddings = LoadedConcept(format: .embedding, source: "tokens")
        embeddings.tokens = combined.tokens
        try tokensOnly.apply(embeddings)
        #expect(F.maxAbsDifference(try F.sample(tokensOnly, prompt: prompt), a) > 100 * max(gap, 1e-7))
    }

    /// A full-weight file (diffusers, or a merge written as one) at strength 1 replaces whatever was
    /// applied to its keys; at s ≠ 1 it interpolates from the base, W0 + s·(W − W0); deltas applied
    /// after it add on top.
    @Test func fullWeightFileReplaces() throws {
        let dir = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let unet = try F.unet()
        let delta = try Self.written(try F.synthetic(unet, seed: 31, token: "<new1>"), as: .bundle, name: "delta", in: dir)
        let full = try F.synthetic(unet, seed: 32, token: "<new2>")
        let folder = dir.appendingPathComponent("diffusers", isDirectory: true)
        try DiffusersConceptFormat.write(full, to: folder)
        let weights = try ConceptFile.load(folder.path)
        #expect(weights.format == .diffusers && weights.deltas.isEmpty)

        let session = ConceptPipeline(try F.pipeline())
        try session.apply(delta, strength: 0.7)
        try session.apply(weights)
        for (key, w) in full.unet {
            #expect(session.pipeline.models.unet.weights[key].array == w.array, "\(key): the full weight replaces the blended one")
        }
        #expect(session.pipeline.tokenizer.id(of: "<new1>") != nil && session.pipeline.tokenizer.id(of: "<new2>") != nil)

        session.reset()
        try session.apply(weights, strength: 0.5)
        try session.apply(delta, strength: 0.7)
        for (key, w) in full.unet {
            let w0 = unet.weights[key], d = delta.deltas[key]!, got = session.pipeline.models.unet.weights[key]
            let bad = (0..<w.count).first {
                let expected = (w0.pointer[$0] + 0.5 * (w.pointer[$0] - w0.pointer[$0])) + 0.7 * d.pointer[$0]
                return got.pointer[$0] != expected
            }
            #expect(bad == nil, "\(key)[\(bad ?? 0)]: W0 + 0.5·(W − W0), then + 0.7·Δ")
        }
    }

    /// Spec §8.3 makes deltas add. A bundle tensor stored whole (`unet_full`: some element has no
    /// exact delta, common in real runs) is applied by `ConceptPipeline` as a full weight, so it
    /// replaces what an earlier concept added to that key instead of adding its own W − W0.
    /// Recorded as a known issue (ConceptPipeline is outside this change); compressing the bundle
    /// turns such tensors into factored deltas, which blend.
    @Test func bundleFullTensorsBlendLikeDeltas() throws {
        let dir = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let unet = try F.unet()
        var first = try F.synthetic(unet, seed: 41, token: "<new1>")
        let key = try #require(first.unet.keys.sorted().first)
        let w = first.unet[key]!.copy()
        w.pointer[0] = unet.weights[key].pointer[0] > 0 ? -1e-30 : 1e-30  // crosses zero: no exact delta
        first.unet[key] = w
        let bundle = try Self.written(first, as: .bundle, name: "first", in: dir)
        try #require(bundle.weights[key] != nil, "the tensor is stored whole")
        let second = try Self.written(try F.synthetic(unet, seed: 42, token: "<new2>"), as: .bundle, name: "second", in: dir)

        let session = ConceptPipeline(try F.pipeline())
        try session.apply(second, strength: 1)
        try session.apply(bundle, strength: 1)
        let w0 = unet.weights[key], got = session.pipeline.models.unet.weights[key], d2 = second.deltas[key]!
        let expected = (0..<w.count).map { Double(w.pointer[$0]) + Double(d2.pointer[$0]) }  // W0 + (W − W0) + Δ2
        let gap = (0..<w.count).reduce(0.0) { max($0, abs(Double(got.pointer[$1]) - expected[$1])) }
        let scale = (0..<w.count).reduce(0.0) { max($0, abs(Double(w0.pointer[$1]))) }
        #expect(gap <= 1e-6 * scale, "\(key): the first bundle's full tensor dropped the second bundle's delta (max gap \(gap))")

        // The compressed bundle stores that tensor as factors: it blends.
        let compressed = dir.appendingPathComponent("first-1.concept.safetensors")
        try ConceptCompression.compress(dir.appendingPathComponent("first.concept.safetensors").path, to: compressed.path, ratio: 1, base: unet)
        session.reset()
        try session.apply(second, strength: 1)
        try session.apply(ConceptFile.load(compressed.path), strength: 1)
        let blended = session.pipeline.models.unet.weights[key]
        let blendGap = (0..<w.count).reduce(0.0) { max($0, abs(Double(blended.pointer[$1]) - expected[$1])) }
        #expect(blendGap <= 1e-6 * scale, "\(key): compressed bundle + second bundle, max gap \(blendGap)")
    }
}
