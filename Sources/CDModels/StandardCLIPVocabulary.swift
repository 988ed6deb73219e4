import Foundation

extension CLIPTokenizer {
    /// OpenAI's CLIP BPE, for checkpoints that carry no tokenizer (single-file SD 1.x/2.x). The
    /// project ships its merges (`Resources/clip-merges.txt`: line 1…48,894 of OpenAI's
    /// `bpe_simple_vocab_16e6.txt.gz`, byte-identical to the HF `merges.txt`); the vocabulary
    /// follows from them as in OpenAI's `SimpleTokenizer`: the 256 byte characters (printable
    /// bytes in byte order, then the remapped ones), the same with `</w>`, each merge joined,
    /// then `<|startoftext|>` 49406 and `<|endoftext|>` 49407.
    public static func standard(padToken: String? = nil) throws -> CLIPTokenizer {
        guard let url = shippedMergesURL else {
            throw ModelError.missingFile(path: "cdtrainer_CDModels.resources/clip-merges.txt",
                                         expected: "the CLIP merges installed next to the cdtrainerd binary (or CD_CLIP_MERGES=path)")
        }
        let merges = try readMerges(url).pairs
        let printable = (0..<256).filter { (33...126).contains($0) || (161...172).contains($0) || (174...255).contains($0) }
        let remapped = (0..<256).filter { !printable.contains($0) }
        let bytes = (printable + remapped).map { String(CLIPByteLevel.characters[$0]) }
        var vocab: [String: Int] = [:]
        for (i, c) in bytes.enumerated() {
            vocab[c] = i
            vocab[c + "</w>"] = bytes.count + i
        }
        for (i, pair) in merges.enumerated() { vocab[pair.0 + pair.1] = 2 * bytes.count + i }
        vocab[defaultBOS] = vocab.count
        vocab[defaultEOS] = vocab.count
        return try CLIPTokenizer(vocab: vocab, merges: merges, padToken: padToken)
    }

    /// Where the shipped merges are: `$CD_CLIP_MERGES`, the resource folder SwiftPM builds next
    /// to the binary, or the source tree (tests, development). `Bundle.module` is not used
    /// because it stops the process when the folder is missing.
    static var shippedMergesURL: URL? {
        var candidates: [URL] = []
        if let path = ProcessInfo.processInfo.environment["CD_CLIP_MERGES"], !path.isEmpty {
            candidates.append(URL(fileURLWithPath: path))
        }
        if let exe = Bundle.main.executableURL?.resolvingSymlinksInPath() {
            candidates.append(exe.deletingLastPathComponent().appendingPathComponent("cdtrainer_CDModels.resources/clip-merges.txt"))
        }
        candidates.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Resources/clip-merges.txt"))
        return candidates.first { FileManager.default.fileExists(atPath: $0.path) }
    }
}
