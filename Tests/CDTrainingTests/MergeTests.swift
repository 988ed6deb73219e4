import CDModels
import CDTensor
import CDTestSupport
@testable import CDTraining
import Foundation
import Testing

/// `ConceptMerge` (paper §3.2) on the fixture model with synthetic single-concept bundles: the
/// target constraints hold, the result is the constrained minimizer of the regularization
/// objective, one input comes back unchanged on its target rows, bad inputs fail clearly.
@Suite(.serialized) struct MergeTests {
    /// A short caption set keeps the tests fast; the shipped set has 1000.
    static let captions = Array(((try? RegularizationCaptions.load()) ?? []).prefix(120))

    func temporaryFolder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("cd-merge-\(UUID())")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A crossattn_kv bundle: every attn2 K/V of the base plus 0.02·N(0, 1)·|W|, one token row.
    func bundle(_ pipeline: StableDiffusionPipeline, seed: UInt64, token: String?, in folder: URL, extraKeys: [String] = []) throws -> LoadedConcept {
        let unet = pipeline.models.unet
        var rng = SplitMix64(seed: seed)
        var trained: [String: Tensor] = [:], base: [String: Tensor] = [:]
        for key in unet.weights.tensors.keys.sorted() where ConceptMerge.isKV(key) || extraKeys.contains(key) {
            let w0 = unet.weights[key]
            let noise = rng.normalTensor(w0.shape)
            trained[key] = Tensor(zip(w0.buffer, noise.buffer).map { $0 + 0.02 * $1 * max(abs($0), 0.05) }, shape: w0.shape)
            base[key] = w0
        }
        let dim = pipeline.models.textEncoder.config.hiddenSize
        let tokens = token.map { [($0, rng.normalTensor([dim]))] } ?? []
        let concept = TrainedConcept(unet: trained, base: base, tokens: tokens, trainable: "crossattn_kv",
                                     baseFingerprint: TrainedConcept.fingerprint(of: base), step: 10,
                                     settings: "{\"concept\":[{\"class_prompt\":\"thing\"}]}", unetConfig: unet.config)
        let url = folder.appendingPathComponent("c\(seed).concept.safetensors")
        try ConceptBundle.write(concept, to: url)
        return try ConceptFile.load(url.path)
    }

    /// Target features C_t [n, D] and row owners, as the merge builds them.
    func targets(_ pipeline: StableDiffusionPipeline, subjects: [String], tokens: [(String, Tensor)]) throws -> ([Double], [Int]) {
        let applied = ConceptPipeline(pipeline)
        defer { applied.reset() }
        var only = LoadedConcept(format: .bundle, source: "tokens")
        only.tokens = tokens
        try applied.apply(only)
        let dim = pipeline.models.textEncoder.config.hiddenSize
        var rows: [Double] = [], owners: [Int] = [], seen = Set<[Double]>()
        for (m, s) in subjects.enumerated() {
            for prompt in [s, "photo of a \(s)"] {
                let f = ConceptMerge.features([prompt], pipeline: pipeline)
                for r in stride(from: 0, to: f.count, by: dim) where seen.insert(Array(f[r..<(r + dim)])).inserted {
                    rows += f[r..<(r + dim)]
                    owners.append(m)
                }
            }
        }
        return (rows, owners)
    }

    func doubles(_ t: Tensor) -> [Double] { t.buffer.map(Double.init) }

    /// An input's trained value of `key` (a bundle stores a delta, or the value where no exact delta exists).
    func trained(_ c: LoadedConcept, _ key: String, _ pipeline: StableDiffusionPipeline) -> [Double] {
        if let w = c.weights[key] { return doubles(w) }
        let w0 = doubles(pipeline.models.unet.weights[key])
        guard let d = c.deltas[key] else { return w0 }
        return zip(w0, doubles(d)).map { $0 + $1 }
    }

    /// ‖(W − W₀) C_regᵀ‖_F² over all K/V keys.
    func objective(_ w: [String: [Double]], _ pipeline: StableDiffusionPipeline, reg: [Double]) -> Double {
        let dim = pipeline.models.textEncoder.config.hiddenSize, rows = reg.count / dim
        let regT = LAPACK.transpose(reg, rows: rows, cols: dim)
        var total = 0.0
        for (key, value) in w {
            let w0 = pipeline.models.unet.weights[key]
            let diff = zip(value, doubles(w0)).map { $0 - $1 }
            total += LAPACK.multiply(diff, regT, m: w0.shape[0], k: dim, n: rows).reduce(0) { $0 + $1 * $1 }
        }
        return total
    }

    @Test func constraintsHoldAndTheResultMinimizesTheObjective() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let pipeline = try StableDiffusionPipeline.load(Fixtures.model.path)
        let a = try bundle(pipeline, seed: 1, token: "<cat1>", in: folder), b = try bundle(pipeline, seed: 2, token: "<pot1>", in: folder)
        let (merged, report) = try ConceptMerge.merge([.init(concept: a, category: "cat"), .init(concept: b, category: "wooden pot")],
                                                      captions: Self.captions, pipeline: pipeline)
        #expect(report.tokens == [["<cat1>", "<new1>"], ["<pot1>", "<new2>"]])
        #expect(merged.tokens.map(\.name) == ["<new1>", "<new2>"])
        // A ridge only where the system needed one (the fixture's text encoder ends in a LayerNorm
        // with unit weight, so every feature row sums to 0 and C_regᵀC_reg is singular).
        print("merge on the fixture: \(report)")
        #expect(report.regularizationRidge == 0 || report.regularizationRcond < ConceptMerge.ridgeThreshold * 1e6)
        #expect(report.targetRidge == 0, "the target system is well-conditioned: \(report)")
        #expect(report.constraintResidual < 1e-8)

        // W C_tᵀ = V_tᵀ in float32 weights: each target row maps as its own model maps it.
        let dim = pipeline.models.textEncoder.config.hiddenSize
        let (ct, owners) = try targets(pipeline, subjects: ["<new1> cat", "<new2> wooden pot"],
                                       tokens: [("<new1>", a.tokens[0].embedding), ("<new2>", b.tokens[0].embedding)])
        #expect(owners.count == report.targetRows)
        let ctT = LAPACK.transpose(ct, rows: owners.count, cols: dim)
        var worst = 0.0
        for (key, w) in merged.unet {
            let inner = w.shape[0], n = owners.count
            let got = LAPACK.multiply(doubles(w), ctT, m: inner, k: dim, n: n)
            for m in 0..<2 {
                let wm = trained([a, b][m], key, pipeline)
                let want = LAPACK.multiply(wm, ctT, m: inner, k: dim, n: n)
                var err = 0.0, norm = 0.0
                for j in 0..<n where owners[j] == m {
                    for r in 0..<inner {
                        err = max(err, abs(got[r * n + j] - want[r * n + j]))
                        norm = max(norm, abs(want[r * n + j]))
                    }
                }
                worst = max(worst, err / max(norm, 1e-12))
            }
        }
        #expect(worst < 1e-4, "largest relative constraint error \(worst) (tolerance 1e-4)")

        // The argmin: moving within the constraints' null space (E C_tᵀ = 0) never lowers the objective.
        let reg = ConceptMerge.features(Self.captions, pipeline: pipeline)
        let w = merged.unet.mapValues(doubles)
        let best = objective(w, pipeline, reg: reg)
        // Projector onto the null space of C_t: P = I − C_tᵀ (C_t C_tᵀ)⁻¹ C_t [D, D].
        let n = owners.count
        let cct = LAPACK.multiply(ct, ctT, m: n, k: dim, n: n)
        let (solved, _) = try LAPACK.solve(cct, n: n, ct, columns: dim)  // (C_t C_tᵀ)⁻¹ C_t [n, D]
        let proj = LAPACK.multiply(ctT, solved, m: dim, k: n, n: dim)
        var rng = SplitMix64(seed: 99)
        for trial in 0..<3 {
            var moved = w
            for (key, value) in w {
                let inner = value.count / dim
                let raw = rng.normalTensor([inner, dim]).buffer.map { Double($0) * 1e-3 }
                let e = LAPACK.multiply(raw, (0..<(dim * dim)).map { (($0 / dim) == ($0 % dim) ? 1 : 0) - proj[$0] }, m: inner, k: dim, n: dim)
                moved[key] = zip(value, e).map { $0 + $1 }
            }
            let other = objective(moved, pipeline, reg: reg)
            #expect(other >= best * (1 - 1e-9), "trial \(trial): a feasible move lowered the objective \(best) → \(other)")
        }
    }

    @Test func oneInputComesBackOnItsTargetsAndIsNoWorseThanItself() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let pipeline = try StableDiffusionPipeline.load(Fixtures.model.path)
        let a = try bundle(pipeline, seed: 3, token: "<dog9>", in: folder)
        let (merged, report) = try ConceptMerge.merge([.init(concept: a)], captions: Self.captions, pipeline: pipeline)
        #expect(report.categories == ["thing"], "the bundle's class prompt is the default category")
        let reg = ConceptMerge.features(Self.captions, pipeline: pipeline)
        var input: [String: [Double]] = [:]
        for key in merged.unet.keys { input[key] = trained(a, key, pipeline) }
        let mergedObjective = objective(merged.unet.mapValues(doubles), pipeline, reg: reg)
        let inputObjective = objective(input, pipeline, reg: reg)
        #expect(mergedObjective <= inputObjective * (1 + 1e-6), "merged \(mergedObjective) vs the input itself \(inputObjective)")
        #expect(report.constraintResidual < 1e-8)

        // Sampling with the merged file applies (a bundle of deltas) and uses the renamed token.
        let out = folder.appendingPathComponent("merged.concept.safetensors")
        try ConceptBundle.write(merged, to: out)
        let loaded = try ConceptFile.load(out.path)
        #expect(loaded.tokens.map(\.name) == ["<new1>"])
        let applied = ConceptPipeline(pipeline)
        defer { applied.reset() }
        try applied.apply(loaded)
        #expect(pipeline.tokenizer.id(of: "<new1>") != nil)
    }

    @Test func badInputsFailClearly() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let pipeline = try StableDiffusionPipeline.load(Fixtures.model.path)
        let good = try bundle(pipeline, seed: 4, token: "<a1>", in: folder)

        // Trained Q as well (a crossattn result).
        let q = try #require(pipeline.models.unet.weights.tensors.keys.sorted().first { $0.hasSuffix("attn2.to_q.weight") })
        let crossattn = try bundle(pipeline, seed: 5, token: "<b1>", in: folder, extraKeys: [q])
        #expect(throws: ConceptMergeError.self) { try ConceptMerge.merge([.init(concept: good), .init(concept: crossattn)], captions: Self.captions, pipeline: pipeline) }

        // Another base: a bundle whose recorded base fingerprint is not this model's.
        var otherBase = good
        otherBase.baseFingerprint = String(repeating: "0", count: 64)
        do {
            _ = try ConceptMerge.merge([.init(concept: otherBase)], captions: Self.captions, pipeline: pipeline)
            Issue.record("a bundle of another base merged")
        } catch let e as ConceptFormatError {
            #expect("\(e)".contains(good.source))
        }

        // No token and no category; two tokens; no category recorded (a diffusers file).
        var bare = good
        bare.tokens = []
        #expect(throws: ConceptMergeError.missingToken(file: good.source)) {
            try ConceptMerge.merge([.init(concept: bare, category: "")], captions: Self.captions, pipeline: pipeline)
        }
        var two = good
        two.tokens.append(("<a2>", good.tokens[0].embedding))
        #expect(throws: ConceptMergeError.severalTokens(file: good.source, tokens: ["<a1>", "<a2>"])) {
            try ConceptMerge.merge([.init(concept: two)], captions: Self.captions, pipeline: pipeline)
        }
        var unrecorded = good
        unrecorded.metadata = [:]
        #expect(throws: ConceptMergeError.missingCategory(file: good.source)) {
            try ConceptMerge.merge([.init(concept: unrecorded)], captions: Self.captions, pipeline: pipeline)
        }
        #expect(throws: ConceptMergeError.noCaptions) { try ConceptMerge.merge([.init(concept: good)], captions: [" "], pipeline: pipeline) }
    }
}
