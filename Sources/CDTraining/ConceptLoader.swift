import CDModels
import CDTensor
import Foundation

/// What is wrong with a concept file (or with applying it); every case names the file.
public enum ConceptFormatError: Error, CustomStringConvertible, Equatable {
    /// Not readable as safetensors: missing, truncated, bad header (the reader's reason).
    case unreadable(file: String, reason: String)
    /// A PyTorch zip/pickle file (`torch.save`): not read, convert it to safetensors.
    case pickle(file: String)
    /// A readable safetensors file that is none of the concept formats; `found` = its first tensor names.
    case notAConcept(file: String, found: [String])
    /// A concept file whose content contradicts its format.
    case malformed(file: String, reason: String)
    /// Trained tensors the target format cannot store.
    case unsupportedTensors(file: String, format: String, keys: [String])
    case writeFailed(file: String, reason: String)
    /// A bundle's deltas were taken against other base weights than the pipeline's.
    case baseMismatch(file: String, bundle: String, pipeline: String)
    /// A modifier token the pipeline's tokenizer already has.
    case tokenExists(file: String, token: String, id: Int)
    /// The concept does not fit the pipeline (unknown UNet keys, shapes, embedding width).
    case incompatible(file: String, reason: String)

    public var description: String {
        switch self {
        case let .unreadable(f, r): return "\(f): not a readable safetensors file: \(r)"
        case let .pickle(f):
            return "\(f): a PyTorch pickle file (torch.save); only safetensors concept files are read — convert it, e.g. with safetensors.torch.save_file"
        case let .notAConcept(f, found):
            return "\(f): not a concept file (expected a cdtrainer bundle, diffusers pytorch_custom_diffusion_weights, an A1111 .delta.safetensors or a one-tensor embedding); tensors: \(found.joined(separator: ", "))"
        case let .malformed(f, r): return "\(f): \(r)"
        case let .unsupportedTensors(f, format, keys): return "\(f): \(format) cannot store \(keys.joined(separator: ", "))"
        case let .writeFailed(f, r): return "\(f): cannot write: \(r)"
        case let .baseMismatch(f, b, p):
            return "\(f): made for other base weights: the bundle's base_fingerprint is \(b), the pipeline's base weights for its keys give \(p)"
        case let .tokenExists(f, t, id): return "\(f): token '\(t)' is already in the pipeline's tokenizer (id \(id))"
        case let .incompatible(f, r): return "\(f): does not fit this pipeline: \(r)"
        }
    }
}

/// A concept file's content in the form the pipeline applies. UNet keys are as the file spells
/// them (diffusers or LDM names) until `resolvingKeys(for:)`.
public struct LoadedConcept: @unchecked Sendable {
    public enum Format: String, Sendable { case bundle, diffusers, a1111Delta, embedding }
    public var format: Format
    /// The file or folder it came from (named in errors).
    public var source: String
    /// Values that replace the base (full trained weights), by UNet key.
    public var weights: [String: Tensor] = [:]
    /// Differences added to the UNet as strength × delta, by UNet key.
    public var deltas: [String: Tensor] = [:]
    /// Modifier tokens in id order, each with its embedding row [dim].
    public var tokens: [(name: String, embedding: Tensor)] = []
    /// Bundles: fingerprint of the base values of all `weights` and `deltas` keys.
    public var baseFingerprint: String?
    /// Bundles: `trainable`, `step`, `settings`.
    public var metadata: [String: String] = [:]

    public init(format: Format, source: String) {
        self.format = format
        self.source = source
    }

    /// The same concept with every UNet key in diffusers spelling for `config` (LDM keys
    /// `model.diffusion_model.…` and `diffusion_model.…` mapped back), shapes checked.
    public func resolvingKeys(for config: UNet2DConditionConfig) throws -> LoadedConcept {
        let shapes = Dictionary(UNet2DConditionModel.parameterSpecs(config).map { ($0.key, $0.shape) }, uniquingKeysWith: { a, _ in a })
        let fromLDM = Dictionary(UNet2DConditionModel.ldmKeyNames(config).map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        var problems: [String] = []
        func resolve(_ tensors: [String: Tensor]) -> [String: Tensor] {
            var out: [String: Tensor] = [:]
            for (key, t) in tensors.sorted(by: { $0.key < $1.key }) {
                guard let k = shapes[key] != nil ? key : fromLDM[key] ?? fromLDM["model." + key] else {
                    problems.append("'\(key)' is not a parameter of this UNet"); continue
                }
                if t.shape != shapes[k]! { problems.append("'\(key)' is \(t.shape), the UNet's is \(shapes[k]!)"); continue }
                if out[k] != nil { problems.append("'\(key)' appears twice") }
                out[k] = t
            }
            return out
        }
        var copy = self
        copy.weights = resolve(weights)
        copy.deltas = resolve(deltas)
        if !Set(copy.weights.keys).isDisjoint(with: copy.deltas.keys) { problems.append("a key has both a full value and a delta") }
        if !problems.isEmpty { throw ConceptFormatError.incompatible(file: source, reason: problems.joined(separator: "; ")) }
        return copy
    }
}

/// Reads any concept file, recognised by content (not by extension): a cdtrainer bundle, a diffusers
/// weights file or output folder, an A1111 delta, or a one-tensor embedding.
public enum ConceptFile {
    public static func load(_ path: String) throws -> LoadedConcept {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ConceptFormatError.unreadable(file: path, reason: "no such file or folder")
        }
        if isDirectory.boolValue { return try loadDiffusersFolder(path) }
        let file = try open(path)
        if let format = file.metadata["format"], format == ConceptBundle.formatName { return try ConceptBundle.read(file) }
        if let entries = try A1111ConceptFormat.entries(file) {
            var concept = LoadedConcept(format: .a1111Delta, source: path)
            concept.deltas = try A1111ConceptFormat.readDeltas(file, entries: entries)
            return concept
        }
        if file.names.contains(where: { $0.contains("_custom_diffusion") }) {
            var concept = LoadedConcept(format: .diffusers, source: path)
            concept.weights = try DiffusersConceptFormat.readWeights(file)
            return concept
        }
        if file.names.count == 1 {
            var concept = LoadedConcept(format: .embedding, source: path)
            concept.tokens = try embedding(file)
            return concept
        }
        throw ConceptFormatError.notAConcept(file: path, found: Array(file.names.sorted().prefix(5)) + (file.names.count > 5 ? ["…"] : []))
    }

    /// A diffusers output folder: `pytorch_custom_diffusion_weights.{safetensors|bin}` plus every
    /// other `.safetensors`/`.bin` file as a token file, in natural name order (`<new2>` before `<new10>`).
    static func loadDiffusersFolder(_ path: String) throws -> LoadedConcept {
        let folder = URL(fileURLWithPath: path, isDirectory: true)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        let weightNames = [DiffusersConceptFormat.weightsFileName, DiffusersConceptFormat.legacyWeightsFileName]
        guard let weightsName = weightNames.first(where: names.contains) else {
            throw ConceptFormatError.unreadable(file: path, reason: "folder without \(weightNames.joined(separator: " or "))")
        }
        var concept = LoadedConcept(format: .diffusers, source: path)
        concept.weights = try DiffusersConceptFormat.readWeights(open(folder.appendingPathComponent(weightsName).path))
        let tokenFiles = names.filter { ($0.hasSuffix(".safetensors") || $0.hasSuffix(".bin")) && !weightNames.contains($0) }
            .sorted { $0.compare($1, options: .numeric) == .orderedAscending }
        for name in tokenFiles {
            let file = try open(folder.appendingPathComponent(name).path)
            guard file.names.count == 1 else { throw ConceptFormatError.notAConcept(file: file.path, found: file.names.sorted()) }
            concept.tokens += try embedding(file)
        }
        let tokenNames = concept.tokens.map(\.name)
        if Set(tokenNames).count != tokenNames.count {
            throw ConceptFormatError.malformed(file: path, reason: "token files repeat a token: \(tokenNames)")
        }
        return concept
    }

    /// The rows of a one-tensor file: [dim] → one token, [n, dim] → `name`, `name_1`, … (diffusers'
    /// rule). The token is the tensor's name, or the file stem for `emb_params` (A1111/kohya).
    static func embedding(_ file: SafetensorsFile) throws -> [(name: String, embedding: Tensor)] {
        let key = file.names[0]
        let t = try tensor(file, key)
        var name = key
        if key == "emb_params" || key == "*" {
            name = URL(fileURLWithPath: file.path).lastPathComponent
            for ext in [".safetensors", ".bin", ".pt"] where name.hasSuffix(ext) { name = String(name.dropLast(ext.count)); break }
        }
        guard (t.rank == 1 || t.rank == 2), t.count > 0 else {
            throw ConceptFormatError.malformed(file: file.path, reason: "embedding '\(key)' has shape \(t.shape), expected [dim] or [n, dim]")
        }
        if t.rank == 1 { return [(name, t)] }
        return (0..<t.shape[0]).map { i in (i == 0 ? name : "\(name)_\(i)", t[i].copy()) }
    }

    /// Opens a safetensors file; on failure, a PyTorch pickle (zip `PK\x03\x04`, or `\x80` + protocol
    /// 2…5) is named as such. Checked after the parse, since a header length can begin with those bytes.
    static func open(_ path: String) throws -> SafetensorsFile {
        do { return try SafetensorsFile(path: path) } catch {
            if let handle = FileHandle(forReadingAtPath: path) {
                let head = [UInt8](handle.readData(ofLength: 4))
                try? handle.close()
                if head.starts(with: [0x50, 0x4B, 0x03, 0x04]) || (head.count >= 2 && head[0] == 0x80 && (2...5).contains(head[1])) {
                    throw ConceptFormatError.pickle(file: path)
                }
            }
            throw ConceptFormatError.unreadable(file: path, reason: "\(error)")
        }
    }

    /// A tensor as fp32, the reader's errors (e.g. an integer dtype) re-typed.
    static func tensor(_ file: SafetensorsFile, _ name: String) throws -> Tensor {
        do { return try file.tensor(name) } catch {
            throw ConceptFormatError.malformed(file: file.path, reason: "\(error)")
        }
    }
}

/// A pipeline plus the base it started from, so that concepts apply against the unmodified base.
///
/// Design: `StableDiffusionPipeline` has no room for extra state, so the base (UNet, tokenizer,
/// token rows at `init`) lives here; `pipeline` is changed in place. Semantics of `apply`:
/// * full weights (diffusers files, bundle `unet_full`) replace: W = W0 + s·(W − W0) from the
///   **base** W0, exactly W when s = 1, so a second full-weight concept replaces the first (§8.2);
/// * deltas (A1111, bundles) add to the **current** weights, W += s·Δ, so several blend as the
///   A1111 extension's `<delta:NAME:s>` tags do (§8.3);
/// * a bundle's base_fingerprint is checked against the **base** values of its keys;
/// * tokens get the next ids (49408, 49409, … for SD) and their rows go into `tokenEmbeddings`.
/// Everything is checked before anything changes: a failed `apply` leaves the pipeline as it was.
public final class ConceptPipeline: @unchecked Sendable {
    public let pipeline: StableDiffusionPipeline
    public let baseUNet: UNet2DConditionModel
    public let baseTokenizer: CLIPTokenizer
    public let baseTokenEmbeddings: EmbeddingOverride?

    /// Takes `pipeline`'s current state as the base.
    public init(_ pipeline: StableDiffusionPipeline) {
        self.pipeline = pipeline
        baseUNet = pipeline.models.unet
        baseTokenizer = pipeline.tokenizer
        baseTokenEmbeddings = pipeline.tokenEmbeddings
    }

    public func apply(_ loaded: LoadedConcept, strength: Float = 1) throws {
        guard strength.isFinite else { throw ConceptFormatError.incompatible(file: loaded.source, reason: "strength \(strength) is not finite") }
        let concept = try loaded.resolvingKeys(for: baseUNet.config)
        if let expected = concept.baseFingerprint {
            var base: [String: Tensor] = [:]
            for key in Array(concept.weights.keys) + Array(concept.deltas.keys) { base[key] = baseUNet.weights[key] }
            let actual = TrainedConcept.fingerprint(of: base)
            if actual != expected { throw ConceptFormatError.baseMismatch(file: concept.source, bundle: expected, pipeline: actual) }
        }
        var updates: [String: Tensor] = [:]
        for (key, w) in concept.weights {
            updates[key] = strength == 1 ? w : Self.combine(baseUNet.weights[key], w, strength, subtractBase: true)
        }
        let current = pipeline.models.unet.weights
        for (key, d) in concept.deltas { updates[key] = Self.combine(current[key], d, strength, subtractBase: false) }
        let (tokenizer, embeddings) = try addTokens(concept)
        let unet: UNet2DConditionModel
        do { unet = try pipeline.models.unet.replacingWeights(updates) } catch {
            throw ConceptFormatError.incompatible(file: concept.source, reason: "\(error)")
        }
        pipeline.models.unet = unet
        pipeline.tokenizer = tokenizer
        pipeline.tokenEmbeddings = embeddings
    }

    /// Back to the state at `init` (UNet, tokenizer, token rows).
    public func reset() {
        pipeline.models.unet = baseUNet
        pipeline.tokenizer = baseTokenizer
        pipeline.tokenEmbeddings = baseTokenEmbeddings
    }

    /// x0 + s·(y − x0) when `subtractBase`, else x0 + s·y; elementwise in float32 [shape of x0].
    static func combine(_ x0: Tensor, _ y: Tensor, _ s: Float, subtractBase: Bool) -> Tensor {
        let out = Tensor(zeros: x0.shape)
        let a = x0.pointer, b = y.pointer, o = out.pointer
        for i in 0..<out.count { o[i] = a[i] + s * (subtractBase ? b[i] - a[i] : b[i]) }
        return out
    }

    /// The tokenizer with the concept's tokens added and the token rows [R + n, dim] extended,
    /// computed on copies; throws for a token already there or a row of the wrong width.
    func addTokens(_ concept: LoadedConcept) throws -> (CLIPTokenizer, EmbeddingOverride?) {
        guard !concept.tokens.isEmpty else { return (pipeline.tokenizer, pipeline.tokenEmbeddings) }
        let width = pipeline.models.textEncoder.config.hiddenSize
        var tokenizer = pipeline.tokenizer
        var ids = pipeline.tokenEmbeddings?.rowIds ?? []
        var rows = pipeline.tokenEmbeddings.map { Array($0.rows.buffer) } ?? []
        for (name, row) in concept.tokens {
            guard row.count == width else {
                throw ConceptFormatError.incompatible(file: concept.source, reason: "token '\(name)' has \(row.count) values, the text encoder's width is \(width)")
            }
            if let id = tokenizer.id(of: name) { throw ConceptFormatError.tokenExists(file: concept.source, token: name, id: id) }
            do { ids.append(try tokenizer.addToken(name)) } catch {
                throw ConceptFormatError.incompatible(file: concept.source, reason: "token '\(name)': \(error)")
            }
            rows += Array(row.buffer)
        }
        return (tokenizer, EmbeddingOverride(rowIds: ids, rows: Tensor(rows, shape: [ids.count, width])))
    }
}

extension StableDiffusionPipeline {
    /// Applies one concept in place, taking the current weights as the base (see `ConceptPipeline`
    /// for the rules). To apply several concepts against one base, or to undo, keep a `ConceptPipeline`.
    public func apply(_ concept: LoadedConcept, strength: Float = 1) throws {
        try ConceptPipeline(self).apply(concept, strength: strength)
    }
}
