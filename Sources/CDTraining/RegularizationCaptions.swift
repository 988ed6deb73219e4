import Foundation

/// The default caption set of `cdtrainerd merge`: 1000 everyday-scene captions written for this
/// project (`tools/make_regularization_captions.py`), shipped as a resource.
public enum RegularizationCaptions {
    public static let fileName = "regularization-captions.txt"

    /// The shipped file: beside the binary (`cdtrainer_CDTraining.resources/`), else in the source
    /// tree (tests, development). `Bundle.module` is not used: it stops the process when missing.
    public static var shippedURL: URL? {
        var candidates: [URL] = []
        if let exe = Bundle.main.executableURL?.resolvingSymlinksInPath() {
            candidates.append(exe.deletingLastPathComponent().appendingPathComponent("cdtrainer_CDTraining.resources/" + fileName))
        }
        candidates.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Resources/" + fileName))
        return candidates.first { FileManager.default.fileExists(atPath: $0.path) }
    }

    /// Non-empty lines of `path` (default: the shipped set).
    public static func load(_ path: String? = nil) throws -> [String] {
        guard let url = path.map({ URL(fileURLWithPath: $0) }) ?? shippedURL else {
            throw ConceptFormatError.unreadable(file: fileName, reason: "the shipped caption set is not next to the binary (cdtrainer_CDTraining.resources/); pass --captions FILE")
        }
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch {
            throw ConceptFormatError.unreadable(file: url.path, reason: error.localizedDescription)
        }
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !lines.isEmpty else { throw ConceptFormatError.unreadable(file: url.path, reason: "no captions (one per line expected)") }
        return lines
    }
}
