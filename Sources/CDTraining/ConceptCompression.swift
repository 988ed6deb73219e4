import CDModels
import CDTensor
import Foundation

/// Low-rank compression of a concept's K/V deltas (spec §6), `cdtrainerd compress`.
///
/// Each K/V weight's ΔW [out, in] (a stored delta, or W − W0 for a full weight) is replaced by the
/// leading singular triplets of its float64 SVD that reach `ratio` of the sum of singular values
/// (`LowRankDelta.rank(keeping:of:)`); other tensors (q/out weights and biases of `crossattn`
/// concepts) and the tokens are copied as they are. The output name picks the format:
/// * `NAME.concept.safetensors`: a bundle with F32 factors `unet_us.`/`unet_vh.` (`ConceptBundle`);
///   its base_fingerprint is the input bundle's, or computed from the base for other inputs;
/// * `NAME.delta.safetensors`: an A1111 delta with `"delta_factors"` entries, `.US`/`.Vh` in F16 as
///   the extension stores them, and one `TOKEN.safetensors` embedding per token beside it.
/// The base UNet is needed for full weights (diffusers files, a bundle's `unet_full` K/V), and to
/// convert between key spellings (diffusers ↔ LDM) or produce a bundle's fingerprint from an A1111
/// delta; given with a bundle, the bundle's base_fingerprint must match it.
public enum ConceptCompression {
    public static let bundleSuffix = ".concept.safetensors"

    /// Reads `input` (any concept file or diffusers folder), writes `output`, returns the report.
    /// Everything is checked and computed before the first file is written.
    @discardableResult
    public static func compress(_ input: String, to output: String, ratio: Double, base: UNet2DConditionModel?) throws -> CompressionReport {
        guard ratio > 0, ratio <= 1 else { throw CompressionError.ratio(ratio) }
        var concept = try ConceptFile.load(input)
        if concept.weights.isEmpty && concept.deltas.isEmpty { throw CompressionError.nothingToCompress(file: input) }
        let target = try target(output, for: &concept, base: base)

        var deltas: [String: Tensor] = [:], full: [String: Tensor] = [:], factored: [String: LowRankDelta] = [:]
        var layers: [CompressionReport.Layer] = []
        // A full value becomes a delta where it is compressed or goes into an A1111 file (which holds
        // deltas only); `target` refused those cases without a base.
        func delta(_ key: String) throws -> Tensor {
            guard let w = concept.weights[key] else { return concept.deltas[key]! }
            guard let base else { throw CompressionError.needsBase(file: input, reason: "'\(key)' is a full value; ΔW = W − W0 needs the base") }
            return try difference(w, base.weights[key], key, input)
        }
        for key in Set(concept.weights.keys).union(concept.deltas.keys).sorted() {
            let stored = concept.weights[key] ?? concept.deltas[key]!
            guard isKV(key, stored) else {
                if case .bundle = target, concept.weights[key] != nil { full[key] = stored } else { deltas[key] = try delta(key) }
                continue
            }
            let d = try delta(key)
            let factors = try factorize(d, ratio: ratio, f16: target.isA1111, key: key, file: input)
            factored[key] = factors
            layers.append(.init(key: try target.key(key, output), shape: d.shape, rank: factors.rank, fullRank: factors.fullRank,
                                relativeError: relativeError(d, factors.product())))
        }

        let url = URL(fileURLWithPath: output)
        let files: [URL]
        switch target {
        case let .bundle(fingerprint):
            var contents = ConceptBundle.Contents(deltas: deltas, full: full, factors: factored, baseFingerprint: fingerprint, tokens: concept.tokens)
            contents.metadata = concept.metadata.merging(["compression_ratio": "\(ratio)"]) { _, new in new }
            try DiffusersConceptFormat.createDirectory(url.deletingLastPathComponent())
            try ConceptBundle.write(contents, to: url)
            files = [url]
        case .a1111:
            var entries: [(key: String, entry: A1111ConceptFormat.Entry)] = []
            for (key, d) in deltas { entries.append((try target.key(key, output), .delta(d))) }
            for (key, f) in factored { entries.append((try target.key(key, output), .factors(f))) }
            files = try A1111ConceptFormat.write(entries.sorted { $0.key < $1.key }, tokens: concept.tokens, to: url)
        }
        let unchanged = try (Array(deltas.keys) + Array(full.keys)).map { try target.key($0, output) }.sorted()
        let inputBytes = try bytes(of: input), outputBytes = try files.map { try bytes(of: $0.path) }.reduce(0, +)
        return CompressionReport(input: input, output: output, format: target.isA1111 ? "a1111" : "bundle", ratio: ratio,
                                 layers: layers, unchanged: unchanged, tokens: concept.tokens.map(\.name), files: files.map(\.path),
                                 inputBytes: inputBytes, outputBytes: outputBytes,
                                 reduction: outputBytes > 0 ? Double(inputBytes) / Double(outputBytes) : 0)
    }

    /// Where the output goes, with what it needs from the base.
    enum Target {
        /// A bundle recording `fingerprint`; keys in the concept's (diffusers) spelling.
        case bundle(fingerprint: String)
        /// An A1111 delta; `ldm` maps diffusers keys to LDM names, nil when the keys already are LDM names.
        case a1111(ldm: [String: String]?)

        var isA1111: Bool { if case .a1111 = self { true } else { false } }

        /// `key` as the output spells it.
        func key(_ key: String, _ output: String) throws -> String {
            guard case let .a1111(ldm?) = self else { return key }
            guard let name = ldm[key] else {
                throw ConceptFormatError.unsupportedTensors(file: output, format: "A1111 delta (no LDM name in this UNet config)", keys: [key])
            }
            return name
        }
    }

    /// The target `output`'s name asks for. With `base`, the concept's keys are put into diffusers
    /// spelling (shapes checked) and a bundle's base_fingerprint is checked against it; without it,
    /// whatever needs it is refused: full K/V weights, a key-spelling conversion, a bundle from a
    /// file that records no fingerprint.
    static func target(_ output: String, for concept: inout LoadedConcept, base: UNet2DConditionModel?) throws -> Target {
        let toBundle = output.hasSuffix(bundleSuffix)
        guard toBundle || output.hasSuffix(A1111ConceptFormat.deltaSuffix) else { throw CompressionError.outputName(file: output) }
        let file = concept.source
        guard let base else {
            let fullKV = concept.weights.filter { isKV($0.key, $0.value) }.keys.sorted()
            if !fullKV.isEmpty {
                let what = concept.format == .diffusers ? "a diffusers file holds full trained weights" : "the bundle stores some tensors as full values (unet_full)"
                let named = fullKV.prefix(2).joined(separator: ", ") + (fullKV.count > 2 ? " and \(fullKV.count - 2) more" : "")
                throw CompressionError.needsBase(file: file, reason: "\(what); ΔW = W − W0 needs the base values of \(named)")
            }
            if toBundle {
                guard concept.format == .bundle, let fingerprint = concept.baseFingerprint else {
                    throw CompressionError.needsBase(file: file, reason: "a bundle records the fingerprint of its base weights and uses diffusers key names; a \(concept.format.rawValue) file has neither")
                }
                return .bundle(fingerprint: fingerprint)
            }
            guard concept.format == .a1111Delta else {
                throw CompressionError.needsBase(file: file, reason: "an A1111 delta uses LDM key names, which depend on the model's UNet config")
            }
            return .a1111(ldm: nil)
        }
        concept = try concept.resolvingKeys(for: base.config)
        var values: [String: Tensor] = [:]
        for key in Array(concept.weights.keys) + Array(concept.deltas.keys) { values[key] = base.weights[key] }
        let actual = TrainedConcept.fingerprint(of: values)
        if let expected = concept.baseFingerprint, expected != actual {
            throw ConceptFormatError.baseMismatch(file: file, bundle: expected, pipeline: actual)
        }
        return toBundle ? .bundle(fingerprint: actual) : .a1111(ldm: UNet2DConditionModel.ldmKeyNames(base.config))
    }

    /// A 2-D `to_k`/`to_v` weight: the tensors compressed (spec §6: every key containing to_k or to_v).
    static func isKV(_ key: String, _ t: Tensor) -> Bool {
        t.rank == 2 && (key.hasSuffix(".to_k.weight") || key.hasSuffix(".to_v.weight"))
    }

    /// `delta`'s truncated SVD; with `f16` the factors rounded to F16 as an A1111 file stores them.
    static func factorize(_ delta: Tensor, ratio: Double, f16: Bool, key: String, file: String) throws -> LowRankDelta {
        guard delta.count > 0, delta.buffer.allSatisfy(\.isFinite) else {
            throw ConceptFormatError.malformed(file: file, reason: "'\(key)' \(delta.shape): empty or not finite, cannot be decomposed")
        }
        let factors: LowRankDelta
        do { factors = try LowRankDelta(truncating: delta, keeping: ratio) } catch {
            throw ConceptFormatError.malformed(file: file, reason: "'\(key)': \(error)")
        }
        guard f16 else { return factors }
        let us = roundedToF16(factors.us), vh = roundedToF16(factors.vh)
        guard us.buffer.allSatisfy(\.isFinite), vh.buffer.allSatisfy(\.isFinite) else {
            throw ConceptFormatError.malformed(file: file, reason: "'\(key)': factors beyond the F16 range (±65504), store it as a bundle")
        }
        return LowRankDelta(us: us, vh: vh)!
    }

    /// w − w0 in float32 [shape of w].
    static func difference(_ w: Tensor, _ w0: Tensor, _ key: String, _ file: String) throws -> Tensor {
        guard w.shape == w0.shape else {
            throw ConceptFormatError.incompatible(file: file, reason: "'\(key)' is \(w.shape), the base's is \(w0.shape)")
        }
        let d = Tensor(zeros: w.shape)
        for i in 0..<w.count { d.pointer[i] = w.pointer[i] - w0.pointer[i] }
        return d
    }

    /// ‖d − p‖_F / ‖d‖_F in float64 (‖p‖_F for a zero d, which the SVD keeps zero).
    static func relativeError(_ d: Tensor, _ p: Tensor) -> Double {
        var err = 0.0, norm = 0.0
        for i in 0..<d.count {
            let x = Double(d.pointer[i])
            err += (x - Double(p.pointer[i])) * (x - Double(p.pointer[i]))
            norm += x * x
        }
        return norm > 0 ? (err / norm).squareRoot() : err.squareRoot()
    }

    static func roundedToF16(_ t: Tensor) -> Tensor {
        Tensor(t.array.map { Float(Float16($0)) }, shape: t.shape)
    }

    /// A file's size, or for a folder the sizes of its .safetensors/.bin files (what a diffusers folder is read from).
    static func bytes(of path: String) throws -> Int {
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        let files = isDirectory.boolValue
            ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [])
                .filter { $0.hasSuffix(".safetensors") || $0.hasSuffix(".bin") }.map { (path as NSString).appendingPathComponent($0) }
            : [path]
        return try files.reduce(0) { total, file in
            do { return total + ((try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0) } catch {
                throw ConceptFormatError.unreadable(file: file, reason: error.localizedDescription)
            }
        }
    }
}
