import CDModels
import CDTensor
import Foundation

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
