import CDTestSupport
import CDModels
import CDTensor
import CDTraining
import Foundation
import Testing

/// Concepts, files and measurements shared by the compression and blending tests. Every size comes
/// from the fixture (`$CD_FIXTURES` or tiny-sd1).
enum CompressionFixture {
    static func unet() throws -> UNet2DConditionModel {
        try UNet2DConditionModel.load(directory: Fixtures.model.appendingPathComponent("unet"))
    }

    static func pipeline() throws -> StableDiffusionPipeline { try StableDiffusionPipeline.load(Fixtures.model.path) }

    static func temporaryFolder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("cdtrainer-compress-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static func isKV(_ key: String) -> Bool { key.hasSuffix(".attn2.to_k.weight") || key.hasSuffix(".attn2.to_v.weight") }

    /// The model's attn2 K/V weights plus deltas with a decaying spectrum, d = c·Σ_k 2^-k a_k b_kᵀ
    /// (a_k, b_k ~ N(0, I)), ‖d‖_F = `scale`·‖W0‖_F, as trained deltas have; with `crossattn` also
    /// q/out weights and bias with small full-rank deltas. One token row N(0, 0.01²).
    static func synthetic(_ unet: UNet2DConditionModel, seed: UInt64, token: String, crossattn: Bool = false, scale: Double = 0.05) throws -> TrainedConcept {
        var rng = SplitMix64(seed: seed)
        let extra = [".attn2.to_q.weight", ".attn2.to_out.0.weight", ".attn2.to_out.0.bias"]
        var trained: [String: Tensor] = [:], base: [String: Tensor] = [:]
        for spec in UNet2DConditionModel.parameterSpecs(unet.config) {
            let kv = isKV(spec.key)
            guard kv || (crossattn && extra.contains(where: spec.key.hasSuffix)) else { continue }
            let w0 = unet.weights[spec.key]
            var d = [Double](repeating: 0, count: w0.count)
            if kv {
                let (m, n) = (spec.shape[0], spec.shape[1])
                for k in 0..<min(m, n) {
                    let a = (0..<m).map { _ in Double(rng.normal()) }, b = (0..<n).map { _ in Double(rng.normal()) }
                    for i in 0..<m { for j in 0..<n { d[i * n + j] += pow(2, -Double(k)) * a[i] * b[j] } }
                }
            } else {
                for i in 0..<d.count { d[i] = Double(rng.normal()) }
            }
            let c = scale * norm(w0.array.map(Double.init)) / max(norm(d), .leastNormalMagnitude)
            trained[spec.key] = Tensor((0..<w0.count).map { w0.pointer[$0] + Float(c * d[$0]) }, shape: w0.shape)
            base[spec.key] = w0
        }
        let width = try textWidth()
        let row = Tensor((0..<width).map { _ in 0.01 * rng.normal() }, shape: [width])
        return TrainedConcept(unet: trained, base: base, tokens: [(token, row)], trainable: crossattn ? "crossattn" : "crossattn_kv",
                              baseFingerprint: TrainedConcept.fingerprint(of: base), step: 3, settings: "{}", unetConfig: unet.config)
    }

    /// The fixture's `cd_train` result after its last step (real training: 3 AdamW steps, lr 1e-5),
    /// or the synthetic concept when the fixture has no such case.
    static func trained(_ unet: UNet2DConditionModel) throws -> TrainedConcept {
        let caseURL = Fixtures.caseFile("cd_train.safetensors")
        guard FileManager.default.fileExists(atPath: caseURL.path) else { return try synthetic(unet, seed: 5, token: "<new1>") }
        let info = try #require(JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.caseFile("cd_train.json"))) as? [String: Any])
        let steps = try #require(info["num_steps"] as? Int), token = try #require(info["modifier_token"] as? String)
        let file = try SafetensorsFile(path: caseURL.path)
        let prefix = "step\(steps).after."
        var trained: [String: Tensor] = [:], base: [String: Tensor] = [:]
        for name in file.names where name.hasPrefix(prefix) && name.contains("_custom_diffusion") {
            let key = String(name.dropFirst(prefix.count)).replacingOccurrences(of: ".processor.", with: ".")
                .replacingOccurrences(of: "_custom_diffusion", with: "")
            trained[key] = try file.tensor(name)
            base[key] = unet.weights[key]
        }
        let row = try file.tensor(prefix + "token_embedding." + token.trimmingCharacters(in: CharacterSet(charactersIn: "<>")))
        return TrainedConcept(unet: trained, base: base, tokens: [(token, row)], trainable: "crossattn_kv",
                              baseFingerprint: TrainedConcept.fingerprint(of: base), step: steps, settings: "{}", unetConfig: unet.config)
    }

    static func textWidth() throws -> Int {
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.model.appendingPathComponent("text_encoder/config.json"))) as? [String: Any]
        return try #require(config?["hidden_size"] as? Int)
    }

    /// DDIM, 3 steps, seed 42, at the UNet's sample size in pixels.
    static func sample(_ pipeline: StableDiffusionPipeline, prompt: String) throws -> Tensor {
        var request = StableDiffusionPipeline.Request(prompt: prompt)
        request.sampler = .ddim
        request.steps = 3
        request.seed = 42
        request.width = (pipeline.models.unet.config.sampleSize ?? 8) * pipeline.vaeScaleFactor
        request.height = request.width
        try #require(pipeline.validate(request) == nil, "\(pipeline.validate(request) ?? "")")
        return pipeline.generate(request)
    }

    static func maxAbsDifference(_ a: Tensor, _ b: Tensor) -> Float {
        (0..<a.count).reduce(0) { max($0, abs(a.pointer[$1] - b.pointer[$1])) }
    }

    /// 10·log10(1 / MSE) for images in [0, 1] (infinite for equal images).
    static func psnr(_ a: Tensor, _ b: Tensor) -> Double {
        let mse = (0..<a.count).reduce(0.0) { $0 + pow(Double(a.pointer[$1] - b.pointer[$1]), 2) } / Double(a.count)
        return 10 * log10(1 / mse)
    }

    static func norm(_ x: [Double]) -> Double { x.reduce(0) { $0 + $1 * $1 }.squareRoot() }

    static func fileSize(_ url: URL) throws -> Int { try #require(FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) }

    /// |us|·|vh| [out, in] in float64: the scale of the rounding in the float32 product us·vh.
    static func absoluteProduct(_ us: Tensor, _ vh: Tensor) -> [Double] {
        let (m, r, n) = (us.shape[0], us.shape[1], vh.shape[1])
        var out = [Double](repeating: 0, count: m * n)
        for i in 0..<m { for k in 0..<r { for j in 0..<n { out[i * n + j] += Double(abs(us.pointer[i * r + k])) * Double(abs(vh.pointer[k * n + j])) } } }
        return out
    }

    /// us·vh [out, in] in float64.
    static func exactProduct(_ us: Tensor, _ vh: Tensor) -> [Double] {
        let (m, r, n) = (us.shape[0], us.shape[1], vh.shape[1])
        var out = [Double](repeating: 0, count: m * n)
        for i in 0..<m { for k in 0..<r { for j in 0..<n { out[i * n + j] += Double(us.pointer[i * r + k]) * Double(vh.pointer[k * n + j]) } } }
        return out
    }
}

@Suite struct CompressionTests {
    typealias F = CompressionFixture

    // MARK: rank selection and factors

    @Test func rankReachesTheShareOfTheSumOfSingularValues() {
        #expect(LowRankDelta.rank(keeping: 0.6, of: [3, 1, 1]) == 1)   // 3/5 reaches 0.6 exactly
        #expect(LowRankDelta.rank(keeping: 1, of: [3, 1, 1]) == 3)
        #expect(LowRankDelta.rank(keeping: 0.8, of: [3, 1, 1]) == 2)
        #expect(LowRankDelta.rank(keeping: 0.81, of: [3, 1, 1]) == 3)
        // Sum, not energy: the s² share of the first value, 9/11, would already reach 0.7.
        #expect(LowRankDelta.rank(keeping: 0.7, of: [3, 1, 1]) == 2)
        // ADB's compress.py keeps r = 0 here (the first value alone exceeds the ratio); never 0.
        #expect(LowRankDelta.rank(keeping: 0.1, of: [100, 1e-3, 1e-3]) == 1)
        #expect(LowRankDelta.rank(keeping: 0.6, of: [0, 0, 0]) == 1)
        #expect(LowRankDelta.rank(keeping: 1, of: [0, 0, 0]) == 1)
        // Ratio 1 keeps every nonzero value, however small, and no zero one.
        #expect(LowRankDelta.rank(keeping: 1, of: [2, 1, 1e-30, 0, 0]) == 3)
        // The relative slack 1.0001: a share short by 5e-5 of the target still counts, 2e-4 does not.
        #expect(LowRankDelta.rank(keeping: 0.6 * (1 + 5e-5), of: [3, 1, 1]) == 1)
        #expect(LowRankDelta.rank(keeping: 0.6 * (1 + 2e-4), of: [3, 1, 1]) == 2)
    }

    @Test(arguments: [[5, 3], [3, 7], [6, 6]]) func factorsReproduceAMatrixAtRatioOne(shape: [Int]) throws {
        var rng = SplitMix64(seed: UInt64(shape[0] * 10 + shape[1]))
        let d = rng.normalTensor(shape)
        let f = try LowRankDelta(truncating: d, keeping: 1)
        #expect(f.us.shape == [shape[0], f.rank] && f.vh.shape == [f.rank, shape[1]])
        #expect(f.rank == min(shape[0], shape[1]) && f.fullRank == f.rank)
        let p = f.product()
        #expect(F.maxAbsDifference(p, d) <= 1e-5, "max |us·vh − d| = \(F.maxAbsDifference(p, d))")

        // A rank-2 matrix: ratio just below 1 keeps 2 (the rest is rounding noise ~1e-16).
        let (m, n) = (shape[0], shape[1])
        let a = rng.normalTensor([m, 2]), b = rng.normalTensor([2, n]), low = Tensor(zeros: [m, n])
        matmulForward(a: a, b: b, out: low)
        let g = try LowRankDelta(truncating: low, keeping: 0.999)
        #expect(g.rank == 2)
        #expect(F.maxAbsDifference(g.product(), low) <= 1e-5)
    }

    // MARK: bundles

    @Test func ratioOneBundleReproducesTheTrainedWeights() throws {
        let unet = try F.unet()
        var concept = try F.trained(unet)
        // One element crossing zero far below its base value: no exact delta exists, so the bundle
        // stores that tensor whole (unet_full) and compression needs the base (as real runs do).
        let crossing = try #require(concept.unet.keys.sorted().first)
        let w = concept.unet[crossing]!.copy(), w0 = concept.base[crossing]!
        w.pointer[0] = w0.pointer[0] > 0 ? -1e-30 : 1e-30
        concept.unet[crossing] = w
        let dir = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("in.concept.safetensors"), output = dir.appendingPathComponent("out.concept.safetensors")
        try ConceptBundle.write(concept, to: input)
        #expect(try ConceptFile.load(input.path).weights[crossing] != nil, "the test's tensor is stored whole")

        let report = try ConceptCompression.compress(input.path, to: output.path, ratio: 1, base: unet)
        let file = try SafetensorsFile(path: output.path)
        #expect(file.metadata["version"] == "2" && file.metadata["base_fingerprint"] == concept.baseFingerprint)
        #expect(file.metadata["compression_ratio"] == "1.0" && file.metadata["step"] == String(concept.step))
        #expect(report.layers.count == concept.unet.count && report.unchanged.isEmpty && report.format == "bundle")

        let pipeline = try F.pipeline()
        try pipeline.apply(ConceptFile.load(output.path))
        var worst = (ratio: 0.0, error: 0.0, key: "")
        for (key, trained) in concept.unet {
            let us = try file.tensor("unet_us." + key), vh = try file.tensor("unet_vh." + key)
            #expect(file.entries.filter { $0.name.hasSuffix("." + key) }.allSatisfy { $0.dtype == .F32 })
            let layer = try #require(report.layers.first { $0.key == key })
            #expect(layer.rank == layer.fullRank && us.shape[1] == layer.rank, "\(key): rank \(layer.rank)/\(layer.fullRank)")
            // float32 product of r terms, plus the rounding of the delta and of W0 + Δ.
            let scale = F.absoluteProduct(us, vh), got = pipeline.models.unet.weights[key], base = concept.base[key]!
            for i in 0..<trained.count {
                let error = Double(abs(got.pointer[i] - trained.pointer[i]))
                let tolerance = Double(layer.rank + 2) * 0x1p-24 * scale[i] + 2 * Double(max(abs(trained.pointer[i]), abs(base.pointer[i])).ulp)
                if error / tolerance > worst.ratio { worst = (error / tolerance, error, key) }
            }
            #expect(layer.relativeError < 1e-5, "\(key): relative error \(layer.relativeError)")
        }
        print("ratio 1.0 bundle: max |W0 + us·vh − W| = \(worst.error) (\(worst.key)), \(worst.ratio) of its tolerance")
        #expect(worst.ratio <= 1, "max |W0 + us·vh − W| = \(worst.error) in \(worst.key): \(worst.ratio)× the tolerance (r + 2)·2⁻²⁴·(|us||vh|) + 2 ulp")
        let token = concept.tokens[0], rows = try #require(pipeline.tokenEmbeddings)
        #expect(rows.rows.array == token.embedding.array && pipeline.tokenizer.id(of: token.name) != nil)
    }

    @Test func ratioPointSixShrinksTheFileAsReported() throws {
        let unet = try F.unet()
        let concept = try F.synthetic(unet, seed: 1, token: "<new1>", crossattn: true)
        let dir = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("in.concept.safetensors"), output = dir.appendingPathComponent("out.concept.safetensors")
        try ConceptBundle.write(concept, to: input)
        let report = try ConceptCompression.compress(input.path, to: output.path, ratio: 0.6, base: nil)  // bundle → bundle: no base needed

        let (inputSize, outputSize) = (try F.fileSize(input), try F.fileSize(output))
        #expect(report.inputBytes == inputSize && report.outputBytes == outputSize)
        #expect(report.files == [output.path] && report.outputBytes < report.inputBytes)
        #expect(abs(report.reduction - Double(report.inputBytes) / Double(report.outputBytes)) < 1e-12)
        print("ratio 0.6 bundle (synthetic crossattn concept): \(report.inputBytes) → \(report.outputBytes) bytes, ranks \(report.layers.map { "\($0.rank)/\($0.fullRank)" })")

        let loaded = try ConceptFile.load(output.path), file = try SafetensorsFile(path: output.path)
        #expect(Set(report.unchanged) == Set(concept.unet.keys.filter { !F.isKV($0) }) && !report.unchanged.isEmpty)
        for key in report.unchanged { #expect(file.contains("unet." + key), "\(key) stays a plain delta") }
        for layer in report.layers {
            #expect(layer.rank >= 1 && layer.rank < layer.fullRank, "\(layer.key): rank \(layer.rank)/\(layer.fullRank)")
            #expect(try file.entry("unet_us." + layer.key).shape == [layer.shape[0], layer.rank])
            #expect(try file.entry("unet_vh." + layer.key).shape == [layer.rank, layer.shape[1]])
            let delta = try ConceptFile.load(input.path).deltas[layer.key]!, product = try #require(loaded.deltas[layer.key])
            let error = F.norm((0..<delta.count).map { Double(delta.pointer[$0] - product.pointer[$0]) }) / F.norm(delta.array.map(Double.init))
            #expect(abs(error - layer.relativeError) <= 1e-6 * layer.relativeError + 1e-12, "\(layer.key): \(error) vs reported \(layer.relativeError)")
            #expect(layer.relativeError > 0 && layer.relativeError < 1)
        }
        // The bundle's fingerprint still guards the base: applies to the fixture.
        let pipeline = try F.pipeline()
        try pipeline.apply(loaded)
        #expect(pipeline.tokenizer.id(of: "<new1>") != nil)
    }

    @Test func unreadableFactorsFailClearly() throws {
        let unet = try F.unet()
        let concept = try F.synthetic(unet, seed: 2, token: "<new1>")
        let dir = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("in.concept.safetensors"), output = dir.appendingPathComponent("out.concept.safetensors")
        try ConceptBundle.write(concept, to: input)
        try ConceptCompression.compress(input.path, to: output.path, ratio: 0.6, base: nil)
        // Drop one unet_vh tensor: the metadata's factored_tensors no longer match.
        let file = try SafetensorsFile(path: output.path)
        var writer = SafetensorsWriter(metadata: file.metadata)
        let dropped = try #require(file.names.first { $0.hasPrefix("unet_vh.") })
        for name in file.names where name != dropped { writer.add(name, try file.tensor(name)) }
        let broken = dir.appendingPathComponent("broken.concept.safetensors")
        try writer.write(to: broken.path)
        let error = #expect(throws: ConceptFormatError.self) { try ConceptFile.load(broken.path) }
        #expect(error?.description.contains("factored_tensors") == true && error?.description.contains(broken.path) == true, "\(String(describing: error))")
    }

    // MARK: A1111

    @Test func a1111CompressedDeltaLoadsAsTheF16Product() throws {
        let unet = try F.unet()
        let concept = try F.synthetic(unet, seed: 3, token: "<new1>", crossattn: true)
        let dir = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("in.concept.safetensors"), out = dir.appendingPathComponent("a1111", isDirectory: true)
        let output = out.appendingPathComponent("cat.delta.safetensors")
        try ConceptBundle.write(concept, to: input)
        let report = try ConceptCompression.compress(input.path, to: output.path, ratio: 0.6, base: unet)
        #expect(report.format == "a1111" && report.files == [output.path, out.appendingPathComponent("<new1>.safetensors").path])
        #expect(report.outputBytes == (try report.files.map { try F.fileSize(URL(fileURLWithPath: $0)) }.reduce(0, +)))

        let file = try SafetensorsFile(path: output.path)
        let json = try #require(JSONSerialization.jsonObject(with: Data((file.metadata["json"] ?? "").utf8)) as? [String: Any])
        #expect((json["meta"] as? [String: String]) == ["version": "0.2.0"] && Array(file.metadata.keys) == ["json"])
        let entries = try #require(json["entries"] as? [String: String])
        let ldm = UNet2DConditionModel.ldmKeyNames(unet.config), source = try ConceptFile.load(input.path)
        #expect(Set(entries.keys) == Set(concept.unet.keys.compactMap { ldm[$0] }))
        let loaded = try ConceptFile.load(output.path)
        #expect(loaded.format == .a1111Delta)
        for (key, kind) in entries {
            let diffusersKey = try #require(ldm.first { $0.value == key }?.key)
            guard kind == "delta_factors" else {
                #expect(kind == "delta" && !F.isKV(diffusersKey) && report.unchanged.contains(key), "\(key): \(kind)")
                #expect(try file.entry(key).dtype == .F16)
                continue
            }
            #expect(F.isKV(diffusersKey))
            let (us, vh) = (try file.entry(key + ".US"), try file.entry(key + ".Vh"))
            let layer = try #require(report.layers.first { $0.key == key })
            #expect(us.dtype == .F16 && vh.dtype == .F16 && us.shape == [layer.shape[0], layer.rank] && vh.shape == [layer.rank, layer.shape[1]])
            let u = try file.tensor(us.name), v = try file.tensor(vh.name)
            let exact = F.exactProduct(u, v), scale = F.absoluteProduct(u, v), got = try #require(loaded.deltas[key])
            let bad = (0..<got.count).first { abs(Double(got.pointer[$0]) - exact[$0]) > Double(layer.rank + 1) * 0x1p-24 * scale[$0] }
            #expect(bad == nil, "\(key)[\(bad ?? 0)]: loaded \(got.pointer[bad ?? 0]), US·Vh from F16 \(exact[bad ?? 0])")
            // The reported error is that of the file as stored (F16 factors, float32 product).
            let delta = source.deltas[diffusersKey]!
            let error = F.norm((0..<delta.count).map { Double(delta.pointer[$0] - got.pointer[$0]) }) / F.norm(delta.array.map(Double.init))
            #expect(abs(error - layer.relativeError) <= 1e-6 * error, "\(key): \(error) vs reported \(layer.relativeError)")
        }
        let embedding = try ConceptFile.load(out.appendingPathComponent("<new1>.safetensors").path)
        #expect(embedding.tokens.map(\.name) == ["<new1>"] && embedding.tokens[0].embedding.array == concept.tokens[0].embedding.array)

        // A1111 → A1111 needs no base (the keys are already LDM names) and keeps ranks ≤ the input's.
        let again = dir.appendingPathComponent("again.delta.safetensors")
        let second = try ConceptCompression.compress(output.path, to: again.path, ratio: 0.999, base: nil)
        for layer in second.layers {
            let first = try #require(report.layers.first { $0.key == layer.key })
            #expect(layer.rank <= first.rank, "\(layer.key): \(layer.rank) after \(first.rank)")
        }
    }

    // MARK: diffusers input and errors

    @Test func diffusersInputNeedsTheBaseToFormDeltas() throws {
        let unet = try F.unet()
        let concept = try F.synthetic(unet, seed: 4, token: "<new1>")
        let dir = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let folder = dir.appendingPathComponent("diffusers", isDirectory: true)
        try DiffusersConceptFormat.write(concept, to: folder)
        let output = dir.appendingPathComponent("out.concept.safetensors")

        let error = #expect(throws: CompressionError.self) { try ConceptCompression.compress(folder.path, to: output.path, ratio: 0.6, base: nil) }
        guard case let .needsBase(file, reason)? = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(file == folder.path && reason.contains("full trained weights") && error!.description.contains("--model"), "\(error!)")
        #expect(!FileManager.default.fileExists(atPath: output.path))

        let report = try ConceptCompression.compress(folder.path, to: output.path, ratio: 1, base: unet)
        #expect(report.tokens == ["<new1>"] && report.layers.allSatisfy { $0.relativeError < 1e-5 })
        let loaded = try ConceptFile.load(output.path)
        #expect(loaded.baseFingerprint == concept.baseFingerprint && loaded.weights.isEmpty)
        for (key, w) in concept.unet {
            let w0 = concept.base[key]!, d = try #require(loaded.deltas[key])
            let bad = (0..<w.count).first { abs(w0.pointer[$0] + d.pointer[$0] - w.pointer[$0]) > 1e-5 * max(abs(w.pointer[$0]), abs(w0.pointer[$0])) }
            #expect(bad == nil, "\(key)[\(bad ?? 0)]")
        }
    }

    @Test func badArgumentsFailClearly() throws {
        let unet = try F.unet()
        let concept = try F.synthetic(unet, seed: 6, token: "<new1>")
        let dir = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bundle = dir.appendingPathComponent("in.concept.safetensors"), output = dir.appendingPathComponent("out.concept.safetensors")
        try ConceptBundle.write(concept, to: bundle)

        for ratio in [0, -0.5, 1.5, .nan] {
            let error = #expect(throws: CompressionError.self) { try ConceptCompression.compress(bundle.path, to: output.path, ratio: ratio, base: nil) }
            #expect(error?.description.contains("(0, 1]") == true, "\(String(describing: error))")
        }
        #expect(throws: CompressionError.outputName(file: dir.appendingPathComponent("out.safetensors").path)) {
            try ConceptCompression.compress(bundle.path, to: dir.appendingPathComponent("out.safetensors").path, ratio: 0.6, base: nil)
        }
        // Bundle → A1111 needs the UNet config for LDM names; A1111 → bundle needs a fingerprint.
        let delta = dir.appendingPathComponent("c.delta.safetensors")
        let toA1111 = #expect(throws: CompressionError.self) { try ConceptCompression.compress(bundle.path, to: delta.path, ratio: 0.6, base: nil) }
        #expect(toA1111?.description.contains("LDM key names") == true, "\(String(describing: toA1111))")
        try A1111ConceptFormat.write(concept, name: "plain", to: dir)
        let plain = dir.appendingPathComponent("plain.delta.safetensors")
        let toBundle = #expect(throws: CompressionError.self) { try ConceptCompression.compress(plain.path, to: output.path, ratio: 0.6, base: nil) }
        #expect(toBundle?.description.contains("fingerprint") == true && toBundle?.description.contains(plain.path) == true, "\(String(describing: toBundle))")
        #expect(throws: CompressionError.nothingToCompress(file: dir.appendingPathComponent("<new1>.safetensors").path)) {
            try ConceptCompression.compress(dir.appendingPathComponent("<new1>.safetensors").path, to: output.path, ratio: 0.6, base: nil)
        }

        // A base other than the bundle's: one K/V value one ulp off.
        let key = try #require(concept.unet.keys.sorted().first)
        let perturbed = unet.weights[key].copy()
        perturbed.pointer[0] = perturbed.pointer[0].nextUp
        var otherBase = concept.base
        otherBase[key] = perturbed
        #expect(throws: ConceptFormatError.baseMismatch(file: bundle.path, bundle: concept.baseFingerprint, pipeline: TrainedConcept.fingerprint(of: otherBase))) {
            try ConceptCompression.compress(bundle.path, to: output.path, ratio: 0.6, base: try unet.replacingWeights([key: perturbed]))
        }
        #expect(!FileManager.default.fileExists(atPath: output.path) && !FileManager.default.fileExists(atPath: delta.path), "nothing written")
    }

    // MARK: sampling

    /// Images from the uncompressed bundle vs its compressions at ratio 1 and 0.6 (DDIM 3 steps, seed
    /// 42), against the distance of the base model (token only, no K/V change) from the uncompressed.
    @Test(arguments: ["trained", "synthetic"]) func compressedSamplesStayCloseToUncompressed(source: String) throws {
        let unet = try F.unet()
        let concept = try source == "trained" ? F.trained(unet) : F.synthetic(unet, seed: 8, token: "<new1>", scale: 0.2)
        let dir = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("in.concept.safetensors")
        try ConceptBundle.write(concept, to: input)
        let prompt = "photo of a \(concept.tokens[0].name) dog"
        func image(_ path: String, kv: Bool = true) throws -> Tensor {
            let pipeline = try F.pipeline()
            var loaded = try ConceptFile.load(path)
            if !kv { loaded.weights = [:]; loaded.deltas = [:]; loaded.baseFingerprint = nil }
            try pipeline.apply(loaded)
            return try F.sample(pipeline, prompt: prompt)
        }
        let reference = try image(input.path), tokenOnly = try image(input.path, kv: false)
        let baseGap = F.maxAbsDifference(tokenOnly, reference)
        var lines = ["\(source) concept: input \(try F.fileSize(input)) bytes; base (no K/V delta) vs uncompressed: max |Δpixel| \(baseGap), PSNR \(F.psnr(tokenOnly, reference)) dB"]
        for ratio in [1.0, 0.6] {
            let output = dir.appendingPathComponent("r\(ratio).concept.safetensors")
            let report = try ConceptCompression.compress(input.path, to: output.path, ratio: ratio, base: unet)
            let compressed = try image(output.path)
            let gap = F.maxAbsDifference(compressed, reference)
            let errors = report.layers.map(\.relativeError)
            lines.append("ratio \(ratio): \(report.outputBytes) bytes (input/output \(String(format: "%.2f", report.reduction))), "
                         + "rel. error mean \(errors.reduce(0, +) / Double(errors.count)) max \(errors.max() ?? 0), "
                         + "ranks \(report.layers.map(\.rank).reduce(0, +))/\(report.layers.map(\.fullRank).reduce(0, +)), "
                         + "max |Δpixel| \(gap), PSNR \(F.psnr(compressed, reference)) dB")
            if ratio == 1 {
                #expect(gap <= 1e-4, "ratio 1: max |Δpixel| \(gap)")
            } else {
                #expect(gap < baseGap, "ratio \(ratio): max |Δpixel| \(gap) is not below the base's \(baseGap)")
            }
        }
        print(lines.joined(separator: "\n"))
    }
}
