/// Errors from loading a CLIP tokenizer (vocab.json, merges.txt, tokenizer configs) or from adding
/// tokens to it. File errors name the file, and merge errors the 1-based line number in merges.txt.
public enum CLIPTokenizerError: Error, CustomStringConvertible, Equatable {
    /// A required file (vocab.json, merges.txt) is not there.
    case missingFile(path: String)
    /// The file exists but could not be read (permissions, a directory, not UTF-8).
    case unreadableFile(path: String, reason: String)
    /// vocab.json is not a JSON object of token → non-negative integer id, or ids repeat.
    case malformedVocabulary(file: String, reason: String)
    /// A merges line that is not exactly two space-separated symbols.
    case malformedMerge(file: String, line: Int, text: String)
    /// A merge whose left part, right part or concatenation is not a vocabulary entry.
    case mergeTokenNotInVocabulary(file: String, line: Int, token: String)
    /// tokenizer_config.json / special_tokens_map.json is not the JSON expected.
    case malformedConfig(file: String, reason: String)
    /// A special token (bos, eos, pad, unk) named by the config (or the default) is not in the vocabulary.
    case specialTokenNotInVocabulary(file: String, role: String, token: String)
    /// An added token that is empty or only whitespace, or that the loader cannot represent.
    case invalidAddedToken(token: String, reason: String)
    /// The token (or one that normalizes to the same text) has already been added.
    case duplicateAddedToken(token: String)
    /// The token is already a vocabulary entry.
    case tokenInVocabulary(token: String, id: Int)

    public var description: String {
        switch self {
        case let .missingFile(p): return "\(p): not found (a CLIP tokenizer needs vocab.json and merges.txt)"
        case let .unreadableFile(p, r): return "\(p): cannot be read: \(r)"
        case let .malformedVocabulary(f, r): return "\(f): not a CLIP vocabulary: \(r)"
        case let .malformedMerge(f, l, t):
            return "\(f):\(l): a merge line must be two symbols separated by one space, got \(String(reflecting: t))"
        case let .mergeTokenNotInVocabulary(f, l, t):
            return "\(f):\(l): merge token \(String(reflecting: t)) is not in the vocabulary"
        case let .malformedConfig(f, r): return "\(f): cannot read tokenizer config: \(r)"
        case let .specialTokenNotInVocabulary(f, role, t):
            return "\(f): \(role) token \(String(reflecting: t)) is not in the vocabulary"
        case let .invalidAddedToken(t, r): return "cannot add token \(String(reflecting: t)): \(r)"
        case let .duplicateAddedToken(t): return "token \(String(reflecting: t)) has already been added"
        case let .tokenInVocabulary(t, id): return "token \(String(reflecting: t)) is already in the vocabulary (id \(id))"
        }
    }
}
