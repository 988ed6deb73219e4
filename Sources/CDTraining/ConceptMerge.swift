import CDModels
import CDTensor
import Foundation

/// The closed-form merge of several single-concept results into one set of cross-attention K/V
/// weights (paper §3.2, spec §5): for every `attn2.to_k` / `attn2.to_v` weight W [inner, D]
///
///     Ŵ = argmin ‖(W − W₀) C_regᵀ‖_F  subject to  W C_tᵀ = V_tᵀ
///       = W₀ + (V_tᵀ − W₀ C_tᵀ)(d C_tᵀ)⁻¹ d,   d = C_t (C_regᵀ C_reg)⁻¹
///
/// with C_reg [N, D] the text encoder's output features of the regularization captions (positions
/// after BOS up to and including EOS; after "photo of a" when a caption has it in its first 15
/// characters, as the reference does), C_t [n_t, D] those of each concept's target prompts
/// ("<newM> category" and "photo of a <newM> category", or "painting in the style of …" when the
/// category is a style: the whole word "art" or "style", not the reference's substring test), and
/// row j of V_t = W_m c_j with W_m the weight of the input that owns row j. A later target row equal
/// to an earlier one is dropped (the first input keeps it). Tokens are renamed `<new1>…<newN>` by
/// input position. Solved in float64 with LAPACK; when a system is ill-conditioned (reciprocal
/// condition below `ridgeThreshold`) a ridge of `ridgeScale` × its mean diagonal is added and
/// reported.
public enum ConceptMerge {
    public static let ridgeThreshold = 1e-12
    public static let ridgeScale = 1e-8

    /// One input: a concept file's content and the category word(s) of its prompts.
    public struct Input {
        public var concept: LoadedConcept
        /// nil: the bundle's recorded class prompt.
        public var category: String?
        public init(concept: LoadedConcept, category: String? = nil) {
            self.concept = concept
            self.category = category
        }
    }

    public struct Report: Sendable, Codable {
        public var inputs: [String]
        public var categories: [String]
        /// Old token name → new name, in input order ("" for an input without a token).
        public var tokens: [[String]]
        public var captions: Int
        public var regularizationRows: Int
        public var targetRows: Int
        /// Reciprocal condition estimates (1-norm) of C_regᵀC_reg and of d C_tᵀ.
        public var regularizationRcond: Double
        public var targetRcond: Double
        /// Ridge added to each system (0: none needed).
        public var regularizationRidge: Double
        public var targetRidge: Double
        public var layers: Int
        /// max over layers of ‖Ŵ C_tᵀ − V_tᵀ‖_F / ‖V_tᵀ‖_F (float64, before rounding to float32).
        public var constraintResidual: Double

        enum CodingKeys: String, CodingKey {
            case inputs, categories, tokens, captions, layers
            case regularizationRows = "regularization_rows", targetRows = "target_rows"
            case regularizationRcond = "regularization_rcond", targetRcond = "target_rcond"
            case regularizationRidge = "regularization_ridge", targetRidge = "target_ridge"
            case constraintResidual = "constraint_residual"
        }
    }

    /// The merged concept (full K/V weights of every attn2 layer, renamed tokens) and the report.
    /// `pipeline` is the base model; it is left as it was.
    public static func merge(_ inputs: [Input], captions: [String], pipeline: StableDiffusionPipeline) throws -> (TrainedConcept, Report) {
        guard !inputs.isEmpty else { throw ConceptMergeError.noInputs }
        let base = pipeline.models.unet
        let keys = base.weights.tensors.keys.filter(isKV).sorted()
        let captions = captions.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !captions.isEmpty else { throw ConceptMergeError.noCaptions }

        // Each input's K/V weights, its token and its target prompt.
        var weights: [[String: Tensor]] = [], tokens: [(name: String, embedding: Tensor)] = []
        var report = Report(inputs: [], categories: [], tokens: [], captions: captions.count, regularizationRows: 0, targetRows: 0,
                            regularizationRcond: 0, targetRcond: 0, regularizationRidge: 0, targetRidge: 0, layers: keys.count,
                            constraintResidual: 0)
        var subjects: [String] = []
        for (i, input) in inputs.enumerated() {
            let c = try checked(input.concept, base: base)
            var w: [String: Tensor] = [:]
            for key in keys {
                if let full = c.weights[key] { w[key] = full } else if let d = c.deltas[key] { w[key] = ConceptPipeline.combine(base.weights[key], d, 1, subtractBase: false) }
            }
            weights.append(w)
            let category = try input.category ?? recordedCategory(c)
            var subject = category
            if let token = c.tokens.first {
                let name = "<new\(i + 1)>"
                tokens.append((name, token.embedding))
                report.tokens.append([token.name, name])
                subject = category.isEmpty ? name : "\(name) \(category)"
            } else {
                report.tokens.append(["", ""])
                guard !category.isEmpty else { throw ConceptMergeError.missingToken(file: c.source) }
            }
            report.inputs.append(c.source)
            report.categories.append(category)
            subjects.append(subject)
        }

        // Features with the renamed tokens registered (on the pipeline, undone before returning).
        let withTokens = ConceptPipeline(pipeline)
        defer { withTokens.reset() }
        var tokensOnly = LoadedConcept(format: .bundle, source: "merged tokens")
        tokensOnly.tokens = tokens
        try withTokens.apply(tokensOnly)
        let dim = pipeline.models.textEncoder.config.hiddenSize

        let reg = features(captions, pipeline: pipeline)
        report.regularizationRows = reg.count / dim
        var targets: [Double] = [], owners: [Int] = []
        var seen = Set<[Double]>()
        for (m, subject) in subjects.enumerated() {
            let style = subject.lowercased().split(whereSeparator: { !$0.isLetter }).contains { $0 == "art" || $0 == "style" }
            for prompt in [subject, style ? "painting in the style of \(subject)" : "photo of a \(subject)"] {
                let rows = features([prompt], pipeline: pipeline)
                for r in stride(from: 0, to: rows.count, by: dim) {
                    let row = Array(rows[r..<(r + dim)])
                    guard seen.insert(row).inserted else { continue }
                    targets += row
                    owners.append(m)
                }
            }
        }
        let n = owners.count
        report.targetRows = n

        // d = C_t (C_regᵀ C_reg)⁻¹ [n, D] and M = d C_tᵀ [n, n]: the same for every layer.
        let gram = LAPACK.gram(reg, rows: report.regularizationRows, cols: dim)
        let ctT = LAPACK.transpose(targets, rows: n, cols: dim)  // [D, n]
        let (x, regRcond, regRidge) = try solveWithRidge(gram, n: dim, ctT, columns: n, spd: true)
        report.regularizationRcond = regRcond
        report.regularizationRidge = regRidge
        let d = LAPACK.transpose(x, rows: dim, cols: n)  // [n, D]
        let mMatrix = LAPACK.multiply(d, ctT, m: n, k: dim, n: n)

        var merged: [String: Tensor] = [:], baseValues: [String: Tensor] = [:]
        var targetRcond = 1.0, targetRidge = 0.0, worst = 0.0
        for key in keys {
            let w0 = base.weights[key]
            let inner = w0.shape[0]
            let w0d = w0.buffer.map(Double.init)
            // V_tᵀ [inner, n]: column j from the weight of row j's owner; R = V_tᵀ − W₀ C_tᵀ.
            let base0 = LAPACK.multiply(w0d, ctT, m: inner, k: dim, n: n)
            var vT = base0
            for m in 0..<inputs.count {
                guard let wm = weights[m][key] else { continue }
                let own = LAPACK.multiply(wm.buffer.map(Double.init), ctT, m: inner, k: dim, n: n)
                for j in 0..<n where owners[j] == m { for r in 0..<inner { vT[r * n + j] = own[r * n + j] } }
            }
            let rT = LAPACK.transpose(zip(vT, base0).map { $0 - $1 }, rows: inner, cols: n)  // [n, inner]
            // M is symmetric, so M⁻¹ Rᵀ = (R M⁻¹)ᵀ.
            let (yT, rc, ridge) = try solveWithRidge(mMatrix, n: n, rT, columns: inner, spd: false)
            targetRcond = min(targetRcond, rc)
            targetRidge = max(targetRidge, ridge)
            let update = LAPACK.multiply(LAPACK.transpose(yT, rows: n, cols: inner), d, m: inner, k: n, n: dim)
            let w = zip(w0d, update).map { $0 + $1 }
            let achieved = LAPACK.multiply(w, ctT, m: inner, k: dim, n: n)
            var err = 0.0, norm = 0.0
            for (a, v) in zip(achieved, vT) {
                err += (a - v) * (a - v)
                norm += v * v
            }
            worst = max(worst, norm > 0 ? (err / norm).squareRoot() : err.squareRoot())
            merged[key] = Tensor(w.map(Float.init), shape: w0.shape)
            baseValues[key] = w0
        }
        report.targetRcond = targetRcond
        report.targetRidge = targetRidge
        report.constraintResidual = worst

        let settings = (try? JSONEncoder().encode(["merge": report])).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        let concept = TrainedConcept(unet: merged, base: baseValues, tokens: tokens, trainable: "crossattn_kv",
                                     baseFingerprint: TrainedConcept.fingerprint(of: baseValues), step: 0, settings: settings,
                                     unetConfig: base.config)
        return (concept, report)
    }

    static func isKV(_ key: String) -> Bool {
        key.hasSuffix("attn2.to_k.weight") || key.hasSuffix("attn2.to_v.weight")
    }

    /// The concept with diffusers keys, checked: K/V only, base fingerprint, at most one token.
    static func checked(_ loaded: LoadedConcept, base: UNet2DConditionModel) throws -> LoadedConcept {
        let c = try loaded.resolvingKeys(for: base.config)
        let other = (Array(c.weights.keys) + Array(c.deltas.keys)).filter { !isKV($0) }.sorted()
        guard other.isEmpty else { throw ConceptMergeError.notKV(file: c.source, keys: other) }
        if let expected = c.baseFingerprint {
            var values: [String: Tensor] = [:]
            for key in Array(c.weights.keys) + Array(c.deltas.keys) { values[key] = base.weights[key] }
            let actual = TrainedConcept.fingerprint(of: values)
            if actual != expected { throw ConceptFormatError.baseMismatch(file: c.source, bundle: expected, pipeline: actual) }
        }
        guard c.tokens.count <= 1 else { throw ConceptMergeError.severalTokens(file: c.source, tokens: c.tokens.map(\.name)) }
        return c
    }

    /// A bundle's class prompt (its job settings' first concept), else an error asking for it.
    static func recordedCategory(_ c: LoadedConcept) throws -> String {
        guard let text = c.metadata["settings"], let json = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let concepts = json["concept"] as? [[String: Any]], let prompt = concepts.first?["class_prompt"] as? String, !prompt.isEmpty
        else { throw ConceptMergeError.missingCategory(file: c.source) }
        return prompt
    }

    /// Output-feature rows [rows, D] (float64) of each prompt: positions after BOS (after "photo
    /// of a" when it is in the first 15 characters) up to and including EOS.
    static func features(_ prompts: [String], pipeline: StableDiffusionPipeline) -> [Double] {
        let dim = pipeline.models.textEncoder.config.hiddenSize
        let length = pipeline.tokenizer.modelMaxLength
        var out: [Double] = []
        for start in stride(from: 0, to: prompts.count, by: 32) {
            let chunk = Array(prompts[start..<min(start + 32, prompts.count)])
            let hidden = pipeline.encode(chunk)  // [B, length, D]
            for (b, prompt) in chunk.enumerated() {
                let end = 1 + min(pipeline.tokenizer.encode(prompt).count, length - 2)  // EOS position
                let first = prompt.prefix(15).contains("photo of a") ? 4 : 1
                guard first <= end else { continue }
                for p in first...end {
                    let row = hidden.pointer + (b * length + p) * dim
                    for k in 0..<dim { out.append(Double(row[k])) }
                }
            }
        }
        return out
    }

    /// `LAPACK.solveSPD`/`solve`, adding a ridge (ridgeScale × mean |diagonal|) when the matrix is
    /// ill-conditioned or the factorization fails; returns the solution, the rcond of the matrix
    /// solved and the ridge added (0 when none).
    static func solveWithRidge(_ a: [Double], n: Int, _ b: [Double], columns k: Int, spd: Bool) throws -> ([Double], Double, Double) {
        func run(_ m: [Double]) throws -> (x: [Double], rcond: Double) {
            spd ? try LAPACK.solveSPD(m, n: n, b, columns: k) : try LAPACK.solve(m, n: n, b, columns: k)
        }
        if let plain = try? run(a), plain.rcond >= ridgeThreshold { return (plain.x, plain.rcond, 0) }
        let meanDiagonal = (0..<n).reduce(0.0) { $0 + abs(a[$1 * n + $1]) } / Double(max(n, 1))
        let ridge = ridgeScale * max(meanDiagonal, .leastNormalMagnitude)
        var m = a
        for i in 0..<n { m[i * n + i] += ridge }
        do {
            let r = try run(m)
            return (r.x, r.rcond, ridge)
        } catch {
            throw ConceptMergeError.singular(reason: "\(error)")
        }
    }
}

public enum ConceptMergeError: Error, CustomStringConvertible, Equatable {
    case noInputs
    case noCaptions
    case notKV(file: String, keys: [String])
    case severalTokens(file: String, tokens: [String])
    case missingToken(file: String)
    case missingCategory(file: String)
    case singular(reason: String)

    public var description: String {
        switch self {
        case .noInputs: "merge needs at least one concept file"
        case .noCaptions: "the regularization caption set is empty"
        case let .notKV(file, keys):
            "\(file): trains more than the cross-attention K/V (\(keys.prefix(3).joined(separator: ", "))\(keys.count > 3 ? ", …" : "")); the closed-form merge is for crossattn_kv results only"
        case let .severalTokens(file, tokens):
            "\(file) has \(tokens.count) modifier tokens (\(tokens.joined(separator: ", "))); merge takes single-concept files with at most one token"
        case let .missingToken(file):
            "\(file) has no modifier token and no category: give its category (--categories) so its target prompt has words"
        case let .missingCategory(file):
            "\(file) records no class prompt: give the categories with --categories \"cat+wooden pot\" (one per input, in order)"
        case let .singular(reason): "the merge's linear system cannot be solved even with a ridge: \(reason)"
        }
    }
}
