import Foundation

extension CLIPTokenizer {
    /// OpenAI's CLIP BPE, for checkpoints that carry no tokenizer (single-file SD 1.x/2.x). The
    /// project ships its merges (`Resources/clip-merges.txt`: line 1…48,894 of OpenAI's
    /// `bpe_simple_vocab_16e6.txt.gz`, byte-identical to the HF `merges.txt`); the vocabulary
    /// follows from them as in OpenAI's `SimpleTokenizer`: the 256 byte characters (printable
    /// bytes in byte order, then the remapped ones), the same with `</w>`, each merge joined,
    /// then `<|startoftext|>` 49406 and `<|endoftext|>` 49407.
    public static func standard(padToken: String? = nil) throws -> CLIPTokenizer {
        guard let url = Bundle.module.url(forResource: "clip-merges", withExtension: "txt") else {
            throw ModelError.missingFile(path: "clip-merges.txt", expected: "the CLIP merges shipped in the cdtrainer_CDModels resource bundle next to the binary")
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
}
