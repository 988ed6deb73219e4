import CDTestSupport
import CDModels
import CDTensor
import CDTraining
import Foundation
import Testing

/// The trained concept the format tests write and read: the fixture's `cd_train` /
/// `cd_train_crossattn` result after its last step when the case is there, else (a fixture without
/// Custom Diffusion cases) the model's own attn2 weights plus a deterministic perturbation, so every
/// test runs on any fixture. A missing case in the project's main fixture is a failure.
private struct ConceptCase {
    let concept: TrainedConcept
    /// The fixture's `cases/<name>_output/` folder (reference files), nil for a synthetic concept.
    let referenceOutput: URL?
    /// Image side for sampling: the case's `resolution`, or the UNet's sample_size in pixels.
    let resolution: Int

    static var isMainFixture: Bool {
        let main = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/tiny-sd1", isDirectory: true)
        return Fixtures.directory.standardizedFileURL.path == main.standardizedFileURL.path
    }

    static func load(crossattn: Bool) throws -> ConceptCase {
        let name = crossattn ? "cd_train_crossattn" : "cd_train"
        let unet = try UNet2DConditionModel.load(directory: Fixtures.model.appendingPathComponent("unet"))
        let pixels = try (unet.config.sampleSize ?? 8) * vaeScaleFactor()
        let caseURL = Fixtures.caseFile(name + ".safetensors")
        guard FileManager.default.fileExists(atPath: caseURL.path) else {
            if isMainFixture { Issue.record("main fixture lacks \(caseURL.path): the format tests compare against it") }
            return ConceptCase(concept: try synthetic(unet, crossattn: crossattn), referenceOutput: nil, resolution: pixels)
        }
        let info = try #require(JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.caseFile(name + ".json"))) as? [String: Any])
        let steps = try #require(info["num_steps"] as? Int), token = try #require(info["modifier_token"] as? String)
        let file = try SafetensorsFile(path: caseURL.path)
        let prefix = "step\(steps).after."
        var trained: [String: Tensor] = [:], base: [String: Tensor] = [:]
        for n in file.names where n.hasPrefix(prefix) && n.contains("_custom_diffusion") {
            let key = unetKey(String(n.dropFirst(prefix.count)))
            trained[key] = try file.tensor(n)
            base[key] = unet.weights[key]
        }
        #expect(!trained.isEmpty, "\(caseURL.path): no \(prefix)*_custom_diffusion tensors")
        let row = try file.tensor(prefix + "token_embedding." + token.trimmingCharacters(in: CharacterSet(charactersIn: "<>")))
        let freeze = info["freeze_model"] as? String ?? name
        let concept = TrainedConcept(unet: trained, base: base, tokens: [(token, row)], trainable: freeze,
                                     baseFingerprint: TrainedConcept.fingerprint(of: base), step: steps,
                                     settings: "{\"freeze_model\":\"\(freeze)\",\"learning_rate\":1e-05}", unetConfig: unet.config)
        return ConceptCase(concept: concept, referenceOutput: Fixtures.caseFile(name + "_output"),
                           resolution: info["resolution"] as? Int ?? pixels)
    }

    /// The model's attn2 K/V (and Q/out for crossattn) scaled elementwise by 1 + 0.01·N(0, 1), and a
    /// N(0, 0.01²) token row.
    static func synthetic(_ unet: UNet2DConditionModel, crossattn: Bool) throws -> TrainedConcept {
        let suffixes = [".attn2.to_k.weight", ".attn2.to_v.weight"] + (crossattn ? [".attn2.to_q.weight", ".attn2.to_out.0.weight", ".attn2.to_out.0.bias"] : [])
        var rng = SplitMix64(seed: 7)
        var trained: [String: Tensor] = [:], base: [String: Tensor] = [:]
        for spec in UNet2DConditionModel.parameterSpecs(unet.config) where suffixes.contains(where: spec.key.hasSuffix) {
            let w0 = unet.weights[spec.key], w = w0.copy()
            for i in 0..<w.count { w.pointer[i] *= 1 + 0.01 * rng.normal() }
            trained[spec.key] = w
            base[spec.key] = w0
        }
        let width = try textWidth()
        let row = Tensor((0..<width).map { _ in 0.01 * rng.normal() }, shape: [width])
        return TrainedConcept(unet: trained, base: base, tokens: [("<new1>", row)], trainable: crossattn ? "crossattn" : "crossattn_kv",
                              baseFingerprint: TrainedConcept.fingerprint(of: base), step: 3, settings: "{}", unetConfig: unet.config)
    }

    static func textWidth() throws -> Int {
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.model.appendingPathComponent("text_encoder/config.json"))) as? [String: Any]
        return try #require(config?["hidden_size"] as? Int)
    }

    static func vaeScaleFactor() throws -> Int {
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.model.appendingPathComponent("vae/config.json"))) as? [String: Any]
        return 1 << (try #require((config?["block_out_channels"] as? [Int])?.count) - 1)
    }
}

/// `….attn2.processor.to_out_custom_diffusion.0.weight` → `….attn2.to_out.0.weight` (written out
/// here rather than taken from the code under test).
private func unetKey(_ processorKey: String) -> String {
    processorKey.replacingOccurrences(of: ".processor.", with: ".").replacingOccurrences(of: "_custom_diffusion", with: "")
}

private func processorKey(_ unetKey: String) -> String {
    let parts = unetKey.components(separatedBy: ".attn2.")
    let param = parts[1], dot = param.firstIndex(of: ".")!
    return parts[0] + ".attn2.processor." + param[..<dot] + "_custom_diffusion" + param[dot...]
}

private func bits(_ t: Tensor) -> [UInt32] { t.array.map(\.bitPattern) }

private func temporaryFolder() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("cdtrainer-concept-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// The `ConceptFormatError` `body` throws, or nil (recording an issue) when it throws none or another error.
private func conceptError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> ConceptFormatError? {
    do { try body() } catch let error as ConceptFormatError { return error } catch {
        Issue.record("expected a ConceptFormatError, got \(type(of: error)): \(error)", sourceLocation: sourceLocation)
        return nil
    }
    Issue.record("expected a ConceptFormatError, nothing was thrown", sourceLocation: sourceLocation)
    return nil
}

/// |a − d| ≤ the F16 rounding of d (half an F16 ulp: 2^-11 relative, 2^-25 absolute for subnormals).
private func withinF16Rounding(_ a: Float, _ d: Float) -> Bool { abs(a - d) <= max(abs(d) * 0x1p-11, 0x1p-25) }

/// A weight w0 + Δ16 applied from an F16 delta vs the trained w: the F16 rounding of w − w0 plus
/// `ulps` float32 roundings of the additions.
private func closeToTrained(_ got: Float, _ w: Float, base w0: Float, ulps: Float = 1) -> Bool {
    abs(got - w) <= max(abs(w - w0) * 0x1p-11, 0x1p-25) + ulps * w.ulp
}

@Suite struct ConceptFormatTests {
    // MARK: (a) diffusers files

    @Test(arguments: [false, true]) func diffusersOutputMatchesTrainingScript(crossattn: Bool) throws {
        let c = try ConceptCase.load(crossattn: crossattn), concept = c.concept
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        try DiffusersConceptFormat.write(concept, to: dir)
        let written = try SafetensorsFile(path: dir.appendingPathComponent("pytorch_custom_diffusion_weights.safetensors").path)
        #expect(written.metadata == ["format": "pt"])
        #expect(Set(written.names) == Set(concept.unet.keys.map(processorKey)))
        for (key, w) in concept.unet {
            let e = try written.entry(processorKey(key))
            #expect(e.dtype == .F32 && e.shape == w.shape, "\(e.name): \(e.dtype) \(e.shape)")
            #expect(bits(try written.tensor(e.name)) == bits(w), "\(e.name) values")
        }
        let token = concept.tokens[0]
        let tokenFile = try SafetensorsFile(path: dir.appendingPathComponent(token.name + ".safetensors").path)
        #expect(tokenFile.metadata == ["format": "pt"] && tokenFile.names == [token.name])
        #expect(try tokenFile.entry(token.name).shape == [token.embedding.count] && tokenFile.entry(token.name).dtype == .F32)
        #expect(bits(try tokenFile.tensor(token.name)) == bits(token.embedding))

        guard let reference = c.referenceOutput else { return }
        for name in ["pytorch_custom_diffusion_weights.safetensors", token.name + ".safetensors"] {
            let expected = try SafetensorsFile(path: reference.appendingPathComponent(name).path)
            let actual = try SafetensorsFile(path: dir.appendingPathComponent(name).path)
            #expect(actual.metadata == expected.metadata, "\(name) metadata")
            #expect(Set(actual.names) == Set(expected.names), "\(name) tensor names")
            for n in expected.names where actual.contains(n) {
                let (a, e) = (try actual.entry(n), try expected.entry(n))
                #expect(a.dtype == e.dtype && a.shape == e.shape, "\(name) \(n): \(a.dtype) \(a.shape) vs \(e.dtype) \(e.shape)")
                #expect(try actual.rawBytes(n) == expected.rawBytes(n), "\(name) \(n) bytes")
            }
        }
    }

    @Test func diffusersWriterRefusesOtherTensors() throws {
        var concept = try ConceptCase.load(crossattn: false).concept
        let key = try #require(concept.unet.keys.sorted().first)
        let attn1 = key.replacingOccurrences(of: ".attn2.", with: ".attn1.")
        let ff = key.replacingOccurrences(of: ".attn2.to_k.weight", with: ".ff.net.2.bias").replacingOccurrences(of: ".attn2.to_v.weight", with: ".ff.net.2.bias")
        concept.unet[attn1] = concept.unet[key]
        concept.unet[ff] = Tensor(zeros: [1])
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let error = conceptError { try DiffusersConceptFormat.write(concept, to: dir) }
        guard case let .unsupportedTensors(_, _, keys) = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(Set(keys) == [attn1, ff])
        #expect(error!.description.contains(attn1) && error!.description.contains(ff))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty, "nothing written")
    }

    // MARK: (b) A1111 files

    @Test func a1111DeltaHasLDMKeysF16AndMetadata() throws {
        let concept = try ConceptCase.load(crossattn: false).concept
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        try A1111ConceptFormat.write(concept, name: "concept", to: dir)
        let file = try SafetensorsFile(path: dir.appendingPathComponent("concept.delta.safetensors").path)
        let ldm = UNet2DConditionModel.ldmKeyNames(concept.unetConfig)
        #expect(Set(file.names) == Set(concept.unet.keys.compactMap { ldm[$0] }))
        #expect(file.names.allSatisfy { $0.hasPrefix("model.diffusion_model.") && ($0.contains(".attn2.to_k.") || $0.contains(".attn2.to_v.")) })
        // Level 0, layer 0 is input block 1 whatever layers_per_block is.
        #expect(file.contains("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"))

        #expect(Array(file.metadata.keys) == ["json"])
        let json = try #require(JSONSerialization.jsonObject(with: Data((file.metadata["json"] ?? "").utf8)) as? [String: Any])
        #expect((json["meta"] as? [String: String]) == ["version": "0.2.0"])
        #expect((json["entries"] as? [String: String]) == Dictionary(uniqueKeysWithValues: file.names.map { ($0, "delta") }))
        #expect(file.metadata["json"]!.hasPrefix("{\"meta\": {\"version\": \"0.2.0\"}, \"entries\": {\""))

        var changed = 0
        for (key, w) in concept.unet {
            let e = try file.entry(ldm[key]!)
            #expect(e.dtype == .F16 && e.shape == w.shape, "\(e.name): \(e.dtype) \(e.shape)")
            let stored = try file.tensor(e.name), w0 = concept.base[key]!
            for i in 0..<w.count {
                let d = w.pointer[i] - w0.pointer[i]
                if d != 0 { changed += 1 }
                if !withinF16Rounding(stored.pointer[i], d) {
                    Issue.record("\(e.name)[\(i)] = \(stored.pointer[i]), trained − base = \(d)"); break
                }
            }
        }
        #expect(changed > 0, "the trained values differ from the base")

        let token = concept.tokens[0]
        let embedding = try SafetensorsFile(path: dir.appendingPathComponent(token.name + ".safetensors").path)
        #expect(embedding.names == ["emb_params"])
        #expect(try embedding.entry("emb_params").shape == [1, token.embedding.count])
        #expect(bits(try embedding.tensor("emb_params")) == bits(token.embedding))
    }

    @Test func a1111DeltaFactorsAndSingleTensorEmbeddingsRead() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        // Δ = US [2, 1] @ Vh [1, 3], values exact in F16.
        let key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
        var w = SafetensorsWriter(metadata: ["json": "{\"meta\": {\"version\": \"0.2.0\"}, \"entries\": {\"\(key)\": \"delta_factors\"}}"])
        w.add(key + ".US", Tensor([1, -2], shape: [2, 1]), as: .f16)
        w.add(key + ".Vh", Tensor([0.5, 0.25, 4], shape: [1, 3]), as: .f16)
        try w.write(to: dir.appendingPathComponent("f.delta.safetensors").path)
        let loaded = try ConceptFile.load(dir.appendingPathComponent("f.delta.safetensors").path)
        #expect(loaded.format == .a1111Delta)
        #expect(loaded.deltas[key]?.shape == [2, 3] && loaded.deltas[key]?.array == [0.5, 0.25, 4, -1, -0.5, -8])

        // A1111's single-tensor branch: any name, [n, dim] → name, name_1, … (here from the file stem for emb_params).
        var e = SafetensorsWriter()
        e.add("emb_params", Tensor([1, 2, 3, 4], shape: [2, 2]))
        try e.write(to: dir.appendingPathComponent("style.safetensors").path)
        let emb = try ConceptFile.load(dir.appendingPathComponent("style.safetensors").path)
        #expect(emb.format == .embedding && emb.tokens.map(\.name) == ["style", "style_1"])
        #expect(emb.tokens.map(\.embedding.array) == [[1, 2], [3, 4]])
        var single = SafetensorsWriter()
        single.add("<cat-toy>", Tensor([5, 6], shape: [2]), as: .bf16)
        try single.write(to: dir.appendingPathComponent("learned_embeds.safetensors").path)
        let one = try ConceptFile.load(dir.appendingPathComponent("learned_embeds.safetensors").path)
        #expect(one.tokens.map(\.name) == ["<cat-toy>"] && one.tokens[0].embedding.array == [5, 6])
    }

    // MARK: (c) bundle

    @Test(arguments: [false, true]) func bundleRoundTripIsExact(crossattn: Bool) throws {
        let concept = try ConceptCase.load(crossattn: crossattn).concept
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("concept.safetensors")
        try ConceptBundle.write(concept, to: url)
        let file = try SafetensorsFile(path: url.path)
        #expect(file.metadata["format"] == "cdtrainer-concept" && file.metadata["version"] == "1")
        #expect(file.metadata["base_fingerprint"] == concept.baseFingerprint)
        #expect(file.metadata["tokens"] == "[\"<new1>\"]" || concept.tokens[0].name != "<new1>")
        #expect(file.metadata["trainable"] == concept.trainable && file.metadata["step"] == String(concept.step))
        #expect(file.metadata["settings"] == concept.settings)
        #expect(file.entries.allSatisfy { $0.dtype == .F32 })

        let loaded = try ConceptFile.load(url.path)
        #expect(loaded.format == .bundle && loaded.baseFingerprint == concept.baseFingerprint)
        // A tensor is stored whole only where some element has no exact delta (§ ConceptBundle).
        #expect(Set(loaded.deltas.keys).union(loaded.weights.keys) == Set(concept.unet.keys) && Set(loaded.deltas.keys).isDisjoint(with: loaded.weights.keys))
        #expect(loaded.deltas.count > loaded.weights.count, "most tensors are stored as deltas")
        let fullList = try JSONSerialization.jsonObject(with: Data((file.metadata["full_tensors"] ?? "").utf8)) as? [String]
        #expect(fullList.map(Set.init) == Set(loaded.weights.keys), "metadata full_tensors")
        for (key, w) in concept.unet {
            if let full = loaded.weights[key] {
                #expect(bits(full) == bits(w), "full value of \(key)")
                #expect(ConceptBundle.exactDelta(w, base: concept.base[key]!) == nil, "\(key) stored whole although a delta exists")
                continue
            }
            let d = try #require(loaded.deltas[key]), w0 = concept.base[key]!
            let sum = Tensor(zeros: w.shape)
            for i in 0..<w.count { sum.pointer[i] = w0.pointer[i] + d.pointer[i] }
            #expect(bits(sum) == bits(w), "base + delta of \(key)")
        }
        #expect(loaded.tokens.map(\.name) == concept.tokens.map(\.name))
        #expect(zip(loaded.tokens, concept.tokens).allSatisfy { bits($0.embedding) == bits($1.embedding) })
        #expect(loaded.metadata == ["trainable": concept.trainable, "step": String(concept.step), "settings": concept.settings])
    }

    @Test func exactDeltasNudgeOrFallBackToFullValues() throws {
        var rng = SplitMix64(seed: 11)
        for _ in 0..<20000 {  // magnitudes 2^-20 … 2^20 apart, where w − w0 rounds
            let w0 = rng.normal() * Float(pow(2, Double(Int(rng.uniform(-20, 20))))), w = rng.normal() * Float(pow(2, Double(Int(rng.uniform(-20, 20)))))
            if let d = ConceptBundle.exactDelta(Tensor([w], shape: [1]), base: Tensor([w0], shape: [1]))?.array[0] {
                #expect((w0 + d).bitPattern == w.bitPattern, "w0 \(w0) w \(w)")
            } else {  // nil only where no delta within 8 ulps of w − w0 reaches w
                var c = w - w0
                for _ in 0..<8 { c = c.nextDown }
                for _ in 0..<17 {
                    #expect((w0 + c).bitPattern != w.bitPattern, "w0 \(w0) w \(w): \(c) works")
                    c = c.nextUp
                }
            }
        }
        // A power-of-two target has a rounding interval twice as wide above as below: w − w0 rounds
        // to the wrong side, one ulp further lands.
        let b: Float = Float(bitPattern: 3_223_414_565), four: Float = 4
        #expect((b + (four - b)) != four)
        let nudged = try #require(ConceptBundle.exactDelta(Tensor([four], shape: [1]), base: Tensor([b], shape: [1]))?.array[0])
        #expect(b + nudged == four && nudged != four - b)
        #expect(ConceptBundle.exactDelta(Tensor([0.5], shape: [1]), base: Tensor([1e30], shape: [1])) == nil)
        #expect(ConceptBundle.exactDelta(Tensor([-0.0], shape: [1]), base: Tensor([0.0], shape: [1])) == nil)
        #expect(ConceptBundle.exactDelta(Tensor([.nan], shape: [1]), base: Tensor([1], shape: [1])) == nil)
        #expect(ConceptBundle.exactDelta(Tensor([-0.0], shape: [1]), base: Tensor([-0.0], shape: [1]))?.array[0].bitPattern == (-Float.zero).bitPattern)

        // A tensor with an element no delta reaches is stored whole and named in the metadata.
        var concept = try ConceptCase.load(crossattn: false).concept
        let key = try #require(concept.unet.keys.sorted().first)
        let w0 = concept.base[key]!.copy(), w = concept.unet[key]!.copy()
        w0.pointer[0] = 1e30
        w.pointer[0] = 0.5
        concept.base[key] = w0
        concept.unet[key] = w
        concept.baseFingerprint = TrainedConcept.fingerprint(of: concept.base)
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("b.safetensors")
        try ConceptBundle.write(concept, to: url)
        let file = try SafetensorsFile(path: url.path)
        #expect(file.metadata["full_tensors"]?.contains("\"\(key)\"") == true && file.contains("unet_full." + key) && !file.contains("unet." + key))
        let loaded = try ConceptFile.load(url.path)
        #expect(bits(try #require(loaded.weights[key])) == bits(w) && loaded.deltas[key] == nil)

        concept.baseFingerprint = String(repeating: "0", count: 64)
        guard case .malformed = conceptError({ try ConceptBundle.write(concept, to: url) }) else { Issue.record("inconsistent fingerprint written"); return }
    }

    @Test func bundleSamplesLikeTrainedWeightsInMemory() throws {
        let c = try ConceptCase.load(crossattn: false), concept = c.concept
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("concept.safetensors")
        try ConceptBundle.write(concept, to: url)

        let applied = try StableDiffusionPipeline.load(Fixtures.model.path)
        try applied.apply(ConceptFile.load(url.path))

        let reference = try StableDiffusionPipeline.load(Fixtures.model.path)
        reference.models.unet = try reference.models.unet.replacingWeights(concept.unet)
        let token = concept.tokens[0]
        let id = try reference.tokenizer.addToken(token.name)
        reference.tokenEmbeddings = EmbeddingOverride(rowIds: [id], rows: token.embedding.reshaped([1, token.embedding.count]))

        // The token alone, UNet untouched: must give another image, or the K/V were not applied (§8.1).
        let tokenOnly = try StableDiffusionPipeline.load(Fixtures.model.path)
        var embedding = LoadedConcept(format: .embedding, source: "in memory")
        embedding.tokens = concept.tokens
        try tokenOnly.apply(embedding)

        var request = StableDiffusionPipeline.Request(prompt: "photo of a \(token.name) dog")
        request.sampler = .ddim
        request.steps = 3
        request.width = c.resolution
        request.height = c.resolution
        request.seed = 42
        try #require(applied.validate(request) == nil, "\(applied.validate(request) ?? "")")
        let image = applied.generate(request)
        #expect(image.shape == [1, 3, c.resolution, c.resolution])
        #expect(bits(image) == bits(reference.generate(request)), "bundle-applied vs in-memory trained weights")
        #expect(bits(image) != bits(tokenOnly.generate(request)), "the trained K/V change the image")
    }

    // MARK: (d) every format back onto a pipeline

    enum Written: String, CaseIterable, Sendable { case diffusersFolder, diffusersBinFiles, diffusersFiles, a1111, bundle }

    /// Writes `concept` as `format` and returns the files to load, in order.
    static func write(_ concept: TrainedConcept, as format: Written, in dir: URL) throws -> [URL] {
        let token = dir.appendingPathComponent(concept.tokens[0].name + ".safetensors")
        switch format {
        case .diffusersFolder:
            try DiffusersConceptFormat.write(concept, to: dir)
            return [dir]
        case .diffusersBinFiles:  // safetensors bytes under .bin names (diffusers before PR #9308)
            try DiffusersConceptFormat.write(concept, to: dir)
            let weights = dir.appendingPathComponent("pytorch_custom_diffusion_weights.safetensors")
            try FileManager.default.moveItem(at: weights, to: weights.deletingPathExtension().appendingPathExtension("bin"))
            try FileManager.default.moveItem(at: token, to: token.deletingPathExtension().appendingPathExtension("bin"))
            return [dir]
        case .diffusersFiles:
            try DiffusersConceptFormat.write(concept, to: dir)
            return [dir.appendingPathComponent("pytorch_custom_diffusion_weights.safetensors"), token]
        case .a1111:
            try A1111ConceptFormat.write(concept, name: "concept", to: dir)
            return [dir.appendingPathComponent("concept.delta.safetensors"), token]
        case .bundle:
            try ConceptBundle.write(concept, to: dir.appendingPathComponent("concept.safetensors"))
            return [dir.appendingPathComponent("concept.safetensors")]
        }
    }

    @Test(arguments: Written.allCases, [false, true]) func formatsApplyTrainedWeights(format: Written, crossattn: Bool) throws {
        let concept = try ConceptCase.load(crossattn: crossattn).concept
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let pipeline = try StableDiffusionPipeline.load(Fixtures.model.path)
        let before = pipeline.models.unet.weights.tensors
        for url in try Self.write(concept, as: format, in: dir) { try pipeline.apply(ConceptFile.load(url.path)) }

        let after = pipeline.models.unet.weights.tensors
        for (key, w) in concept.unet {
            let got = try #require(after[key])
            if format == .a1111 {
                let w0 = concept.base[key]!
                let bad = (0..<w.count).first { !closeToTrained(got.pointer[$0], w.pointer[$0], base: w0.pointer[$0]) }
                #expect(bad == nil, "\(key)[\(bad ?? 0)]: \(got.pointer[bad ?? 0]) vs trained \(w.pointer[bad ?? 0])")
            } else {
                #expect(bits(got) == bits(w), "\(format) \(key)")
            }
        }
        let untouched = before.filter { concept.unet[$0.key] == nil }
        #expect(untouched.allSatisfy { after[$0.key]!.pointer == $0.value.pointer }, "other weights are not touched")

        let token = concept.tokens[0]
        let id = try #require(pipeline.tokenizer.id(of: token.name))
        #expect(id == pipeline.tokenizer.baseVocabularySize, "first added token gets the first id past the vocabulary")
        let rows = try #require(pipeline.tokenEmbeddings)
        #expect(rows.rowIds == [id] && bits(rows.rows) == bits(token.embedding))
    }

    // MARK: (e) errors and base handling

    @Test func bundleOnOtherBaseNamesBothFingerprints() throws {
        let concept = try ConceptCase.load(crossattn: false).concept
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("concept.safetensors")
        try ConceptBundle.write(concept, to: url)

        let pipeline = try StableDiffusionPipeline.load(Fixtures.model.path)
        let key = try #require(concept.unet.keys.sorted().first { $0.hasSuffix("to_k.weight") })
        let perturbed = pipeline.models.unet.weights[key].copy()
        perturbed.pointer[0] = perturbed.pointer[0].nextUp
        pipeline.models.unet = try pipeline.models.unet.replacingWeights([key: perturbed])
        var base = concept.base
        base[key] = perturbed
        let other = TrainedConcept.fingerprint(of: base)

        let error = conceptError { try pipeline.apply(ConceptFile.load(url.path)) }
        #expect(error == .baseMismatch(file: url.path, bundle: concept.baseFingerprint, pipeline: other))
        let text = error?.description ?? ""
        #expect(text.contains(url.path) && text.contains(concept.baseFingerprint) && text.contains(other), "\(text)")
        #expect(pipeline.tokenizer.id(of: concept.tokens[0].name) == nil && bits(pipeline.models.unet.weights[key]) == bits(perturbed),
                "a failed apply changes nothing")
    }

    @Test func truncatedAndForeignFilesFailClearly() throws {
        let concept = try ConceptCase.load(crossattn: false).concept
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        var files = try Self.write(concept, as: .bundle, in: dir) + Self.write(concept, as: .a1111, in: dir)
        files += try Self.write(concept, as: .diffusersFiles, in: dir)
        for url in files {
            let bytes = try Data(contentsOf: url)
            for keep in [bytes.count / 2, bytes.count - 1, 5] {
                let cut = dir.appendingPathComponent("cut-\(keep)-" + url.lastPathComponent)
                try bytes.prefix(keep).write(to: cut)
                let error = conceptError { _ = try ConceptFile.load(cut.path) }
                guard case .unreadable = error else { Issue.record("\(cut.lastPathComponent): \(String(describing: error))"); continue }
                #expect(error!.description.hasPrefix(cut.path), "\(error!)")
            }
        }

        var foreign = SafetensorsWriter()
        foreign.add("encoder.weight", Tensor(zeros: [2, 2]))
        foreign.add("decoder.bias", Tensor(zeros: [2]))
        let foreignURL = dir.appendingPathComponent("foreign.safetensors")
        try foreign.write(to: foreignURL.path)
        #expect(conceptError { _ = try ConceptFile.load(foreignURL.path) } == .notAConcept(file: foreignURL.path, found: ["decoder.bias", "encoder.weight"]))

        for (name, head) in [("zip.bin", [0x50, 0x4B, 0x03, 0x04, 0, 0, 0, 0, 0, 0, 0, 0]), ("legacy.pt", [0x80, 0x02, 0x7D, 0x71, 0x00, 0x2E, 0, 0, 0, 0, 0])] {
            let url = dir.appendingPathComponent(name)
            try Data(head.map(UInt8.init)).write(to: url)
            let error = conceptError { _ = try ConceptFile.load(url.path) }
            #expect(error == .pickle(file: url.path) && error!.description.contains("pickle"))
        }

        var extra = SafetensorsWriter(metadata: ["format": "pt"])
        extra.add("down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_custom_diffusion.weight", Tensor(zeros: [2, 2]))
        extra.add("down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.lora.up.weight", Tensor(zeros: [2, 2]))
        let extraURL = dir.appendingPathComponent("extra.safetensors")
        try extra.write(to: extraURL.path)
        let extraError = conceptError { _ = try ConceptFile.load(extraURL.path) }
        #expect(extraError?.description.contains("processor.lora.up.weight") == true, "\(String(describing: extraError))")

        var badJSON = SafetensorsWriter(metadata: ["json": "{\"entries\": 3}"])
        badJSON.add("x", Tensor(zeros: [1]))
        let badURL = dir.appendingPathComponent("bad.delta.safetensors")
        try badJSON.write(to: badURL.path)
        guard case .malformed = conceptError({ _ = try ConceptFile.load(badURL.path) }) else { Issue.record("bad json accepted"); return }

        let missing = dir.appendingPathComponent("missing.safetensors").path
        #expect(conceptError { _ = try ConceptFile.load(missing) } == .unreadable(file: missing, reason: "no such file or folder"))

        // A bundle for another UNet: keys it does not have.
        var alien = LoadedConcept(format: .diffusers, source: "alien")
        alien.weights["up_blocks.9.attentions.0.transformer_blocks.0.attn2.to_k.weight"] = Tensor(zeros: [1])
        let pipeline = try StableDiffusionPipeline.load(Fixtures.model.path)
        guard case let .incompatible(_, reason) = conceptError({ try pipeline.apply(alien) }) else { Issue.record("alien keys accepted"); return }
        #expect(reason.contains("up_blocks.9"))
    }

    @Test func registeredTokenFailsClearly() throws {
        let concept = try ConceptCase.load(crossattn: false).concept
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = try Self.write(concept, as: .bundle, in: dir)[0]
        let loaded = try ConceptFile.load(url.path)
        let name = concept.tokens[0].name

        let pipeline = try StableDiffusionPipeline.load(Fixtures.model.path)
        let id = try pipeline.tokenizer.addToken(name)
        let unet = pipeline.models.unet
        #expect(conceptError { try pipeline.apply(loaded) } == .tokenExists(file: url.path, token: name, id: id))
        #expect(pipeline.models.unet === unet, "a failed apply changes nothing")

        let session = ConceptPipeline(try StableDiffusionPipeline.load(Fixtures.model.path))
        try session.apply(loaded)
        let again = conceptError { try session.apply(loaded) }
        #expect(again == .tokenExists(file: url.path, token: name, id: id))
        #expect(again?.description.contains(name) == true && again?.description.contains(url.path) == true)
    }

    @Test func conceptPipelineBlendsDeltasAgainstItsBase() throws {
        let concept = try ConceptCase.load(crossattn: false).concept
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let a1111 = try Self.write(concept, as: .a1111, in: dir)[0]
        let bundle = try Self.write(concept, as: .bundle, in: dir)[0]
        var delta = try ConceptFile.load(a1111.path)  // no tokens: the A1111 delta file alone
        delta.tokens = []
        let session = ConceptPipeline(try StableDiffusionPipeline.load(Fixtures.model.path))
        let key = try #require(concept.unet.keys.sorted().first)
        let w0 = session.baseUNet.weights[key]

        // Two half-strength deltas blend to about one full delta.
        try session.apply(delta, strength: 0.5)
        try session.apply(delta, strength: 0.5)
        let blended = session.pipeline.models.unet.weights[key], w = concept.unet[key]!
        let bad = (0..<w.count).first { !closeToTrained(blended.pointer[$0], w.pointer[$0], base: w0.pointer[$0], ulps: 3) }
        #expect(bad == nil, "\(key)[\(bad ?? 0)]: \(blended.pointer[bad ?? 0]) vs trained \(w.pointer[bad ?? 0])")
        // The bundle's fingerprint is checked against the base, not the blended weights; its
        // deltas then add on top. Reset restores the base exactly.
        var bundleNoToken = try ConceptFile.load(bundle.path)
        bundleNoToken.tokens = []
        try session.apply(bundleNoToken, strength: 0)
        #expect(bits(session.pipeline.models.unet.weights[key]) == bits(blended))
        session.reset()
        #expect(session.pipeline.models.unet === session.baseUNet)
        try session.apply(ConceptFile.load(bundle.path))
        #expect(bits(session.pipeline.models.unet.weights[key]) == bits(w))
    }
}
