import Foundation

/// CLIP byte-level BPE tokenizer, equal to transformers 5's `CLIPTokenizer` (tokenizers backend) as
/// `StableDiffusionPipeline` and diffusers' training scripts call it (docs/sd-architecture-spec.md §8).
///
/// Pipeline for `encode`:
/// 1. the special tokens (bos, eos, unk: `<|startoftext|>`, `<|endoftext|>`) are found in the raw text
///    (exact match, leftmost-longest) and become their ids;
/// 2. each text between them is normalized (NFC, whitespace runs → one space, lower-case);
/// 3. added tokens (`addToken`) are found in the normalized text, anywhere, and become their ids;
/// 4. the rest is split by the CLIP regex, each piece is spelt in byte-level characters, `</w>` is
///    appended to its last symbol, and BPE merges the lowest-ranked adjacent pair (all occurrences,
///    left to right) until no ranked pair is left; each symbol maps to its vocabulary id (unk if absent).
///
/// The SD2 tokenizer's pad token `!` is used only for padding: a literal `!` in a prompt is tokenized
/// normally (spec §8.5), where transformers would turn it into id 0.
public struct CLIPTokenizer: Sendable {
    public let bosToken: String
    public let eosToken: String
    public let padToken: String
    public let unkToken: String
    public let bosID: Int
    public let eosID: Int
    public let padID: Int
    public let unkID: Int
    /// `model_max_length` from tokenizer_config.json (77 when absent or unusable).
    public let modelMaxLength: Int
    /// Tokens added with `addToken`, in id order (the first has id `baseVocabularySize`).
    public private(set) var addedTokens: [String] = []

    /// Size of vocab.json's id space (largest id + 1; 49,408 for CLIP).
    public let baseVocabularySize: Int
    /// Vocabulary size including added tokens (what `len(tokenizer)` gives in transformers).
    public var vocabularySize: Int { baseVocabularySize + addedTokens.count }

    private let vocab: [String: Int]
    private let tokenByID: [Int: String]
    /// Packed pair of symbol ids → rank and merged id.
    private let merges: [UInt64: Merge]
    /// Id of each byte's character, and of the character + `</w>` (unk where absent).
    private let byteIDs: [Int32]
    private let finalByteIDs: [Int32]
    /// Matched in the raw text before normalization.
    private let specialTokens: [Literal]
    /// Matched in normalized text; `addedTokens[i]` normalized, with its id.
    private var addedLiterals: [Literal] = []
    private var addedIDs: [String: Int] = [:]

    private struct Merge: Sendable {
        let rank: Int32
        let id: Int32
    }

    private struct Literal: Sendable {
        let scalars: [Unicode.Scalar]
        let id: Int
    }

    public static let defaultBOS = "<|startoftext|>"
    public static let defaultEOS = "<|endoftext|>"
    public static let defaultMaxLength = 77
    static let wordSuffix = "</w>"

    // MARK: - Loading

    /// Reads `vocab.json` and `merges.txt` from a tokenizer folder, and the special tokens and
    /// `model_max_length` from `tokenizer_config.json` / `special_tokens_map.json` when present
    /// (defaults: bos `<|startoftext|>`, eos `<|endoftext|>`, unk = pad = eos, length 77).
    /// Tokens listed in `tokenizer_config.json`'s `added_tokens_decoder` beyond the vocabulary
    /// (a saved tokenizer with e.g. `<new1>`) are added again, in id order.
    public init(directory: URL) throws {
        let vocabURL = directory.appendingPathComponent("vocab.json")
        let mergesURL = directory.appendingPathComponent("merges.txt")
        let configURL = directory.appendingPathComponent("tokenizer_config.json")
        let mapURL = directory.appendingPathComponent("special_tokens_map.json")

        // transformers 5 may save only `tokenizer.json` (the tokenizers format): read the BPE
        // vocabulary, merges and added tokens from there when vocab.json is absent.
        let fastURL = directory.appendingPathComponent("tokenizer.json")
        let fm = FileManager.default
        let fromFast = !fm.fileExists(atPath: vocabURL.path) && fm.fileExists(atPath: fastURL.path)
        let vocab: [String: Int], merges: (pairs: [(String, String)], lines: [Int])
        var fastAdded: [(id: Int, entry: [String: Any])] = []
        if fromFast {
            (vocab, merges, fastAdded) = try Self.readFastTokenizer(fastURL)
        } else {
            vocab = try Self.readVocabulary(vocabURL)
            merges = try Self.readMerges(mergesURL)
        }

        var special = SpecialTokens()
        var maxLength = Self.defaultMaxLength
        var configAdded: [(id: Int, entry: [String: Any])] = []
        var sourceFile = "defaults"
        if FileManager.default.fileExists(atPath: configURL.path) {
            let config = try Self.readJSONObject(configURL)
            try special.read(config, file: configURL.path)
            if let raw = config["model_max_length"] {
                if let n = raw as? NSNumber, n.doubleValue >= 1, n.doubleValue <= 1_000_000 {
                    maxLength = n.intValue
                } else if !(raw is NSNumber) && !(raw is NSNull) {
                    throw CLIPTokenizerError.malformedConfig(file: configURL.path, reason: "model_max_length is not a number")
                }
            }
            if let decoder = config["added_tokens_decoder"] {
                guard let dict = decoder as? [String: Any] else {
                    throw CLIPTokenizerError.malformedConfig(file: configURL.path, reason: "added_tokens_decoder is not an object")
                }
                for (key, value) in dict {
                    guard let id = Int(key), let entry = value as? [String: Any] else {
                        throw CLIPTokenizerError.malformedConfig(
                            file: configURL.path, reason: "added_tokens_decoder entry \(String(reflecting: key)) is not id → token object")
                    }
                    configAdded.append((id, entry))
                }
            }
            sourceFile = configURL.path
        }
        if FileManager.default.fileExists(atPath: mapURL.path) {
            try special.read(try Self.readJSONObject(mapURL), file: mapURL.path)
            sourceFile = mapURL.path
        }

        for added in fastAdded where !configAdded.contains(where: { $0.id == added.id }) { configAdded.append(added) }

        try self.init(
            vocab: vocab, vocabFile: fromFast ? fastURL.path : vocabURL.path, mergeList: merges.pairs, mergeLines: merges.lines,
            mergesFile: fromFast ? fastURL.path : mergesURL.path, special: special, modelMaxLength: maxLength, configFile: sourceFile)

        // Re-add a saved tokenizer's added tokens (ids beyond vocab.json), in id order.
        for (id, entry) in configAdded.sorted(by: { $0.id < $1.id }) where id >= baseVocabularySize {
            let content = entry["content"] as? String ?? ""
            guard id == vocabularySize else {
                throw CLIPTokenizerError.invalidAddedToken(
                    token: content, reason: "\(configURL.path): added token id \(id) does not follow the vocabulary (expected \(vocabularySize))")
            }
            if (entry["special"] as? Bool) == true || (entry["normalized"] as? Bool) == false {
                throw CLIPTokenizerError.invalidAddedToken(
                    token: content, reason: "\(configURL.path): only normalized, non-special added tokens are supported")
            }
            _ = try addToken(content)
        }
    }

    /// A tokenizer from an in-memory vocabulary and merge list (ranked in list order).
    /// The special tokens must be vocabulary entries; `padToken`/`unkToken` default to `eosToken`.
    public init(
        vocab: [String: Int], merges: [(String, String)],
        bosToken: String = CLIPTokenizer.defaultBOS, eosToken: String = CLIPTokenizer.defaultEOS,
        padToken: String? = nil, unkToken: String? = nil, modelMaxLength: Int = CLIPTokenizer.defaultMaxLength
    ) throws {
        for (token, id) in vocab where id < 0 || id > Int(Int32.max) {
            throw CLIPTokenizerError.malformedVocabulary(file: "vocab (in memory)", reason: "\(String(reflecting: token)) has id \(id)")
        }
        let special = SpecialTokens(bos: bosToken, eos: eosToken, pad: padToken, unk: unkToken)
        try self.init(
            vocab: vocab, vocabFile: "vocab (in memory)", mergeList: merges, mergeLines: nil, mergesFile: "merges (in memory)",
            special: special, modelMaxLength: modelMaxLength, configFile: "arguments")
    }

    private init(
        vocab: [String: Int], vocabFile: String, mergeList: [(String, String)], mergeLines: [Int]?, mergesFile: String,
        special: SpecialTokens, modelMaxLength: Int, configFile: String
    ) throws {
        self.vocab = vocab
        var byID: [Int: String] = [:]
        byID.reserveCapacity(vocab.count)
        for (token, id) in vocab {
            if let other = byID[id] {
                throw CLIPTokenizerError.malformedVocabulary(
                    file: vocabFile,
                    reason: "id \(id) is given to both \(String(reflecting: other)) and \(String(reflecting: token))")
            }
            byID[id] = token
        }
        tokenByID = byID
        baseVocabularySize = (vocab.values.max() ?? -1) + 1

        func lookup(_ role: String, _ token: String) throws -> Int {
            guard let id = vocab[token] else {
                throw CLIPTokenizerError.specialTokenNotInVocabulary(file: configFile, role: role, token: token)
            }
            return id
        }
        bosToken = special.bos
        eosToken = special.eos
        padToken = special.pad ?? special.eos
        unkToken = special.unk ?? special.eos
        bosID = try lookup("bos", bosToken)
        eosID = try lookup("eos", eosToken)
        padID = try lookup("pad", padToken)
        unkID = try lookup("unk", unkToken)
        self.modelMaxLength = modelMaxLength

        var table: [UInt64: Merge] = [:]
        table.reserveCapacity(mergeList.count)
        for (rank, pair) in mergeList.enumerated() {
            let line = mergeLines?[rank] ?? rank + 1
            guard let a = vocab[pair.0] else {
                throw CLIPTokenizerError.mergeTokenNotInVocabulary(file: mergesFile, line: line, token: pair.0)
            }
            guard let b = vocab[pair.1] else {
                throw CLIPTokenizerError.mergeTokenNotInVocabulary(file: mergesFile, line: line, token: pair.1)
            }
            let joined = pair.0 + pair.1
            guard let merged = vocab[joined] else {
                throw CLIPTokenizerError.mergeTokenNotInVocabulary(file: mergesFile, line: line, token: joined)
            }
            let key = Self.pack(Int32(a), Int32(b))
            // A repeated pair keeps its first (lowest) rank.
            if table[key] == nil { table[key] = Merge(rank: Int32(rank), id: Int32(merged)) }
        }
        merges = table

        let unk = Int32(unkID)
        byteIDs = CLIPByteLevel.characters.map { c in vocab[String(c)].map(Int32.init) ?? unk }
        finalByteIDs = CLIPByteLevel.characters.map { c in vocab[String(c) + Self.wordSuffix].map(Int32.init) ?? unk }

        var literals: [Literal] = []
        for (token, id) in [(bosToken, bosID), (eosToken, eosID), (unkToken, unkID)]
        where !token.isEmpty && !literals.contains(where: { $0.id == id }) {
            literals.append(Literal(scalars: Array(token.unicodeScalars), id: id))
        }
        specialTokens = literals
    }

    // MARK: - Added tokens

    /// Adds a token with the next id (`vocabularySize`: 49408, 49409, …) and returns it. Like
    /// `tokenizer.add_tokens(token)`: matched anywhere in the normalized (lower-cased) prompt, no BPE.
    /// Throws for an empty or whitespace-only token, a vocabulary entry, or a token already added
    /// (also one that normalizes to the same text as an added token).
    @discardableResult
    public mutating func addToken(_ token: String) throws -> Int {
        let normalized = CLIPNormalizer.normalize(token)
        if normalized.allSatisfy({ $0 == " " }) {
            throw CLIPTokenizerError.invalidAddedToken(token: token, reason: "empty or whitespace only")
        }
        if let id = vocab[token] { throw CLIPTokenizerError.tokenInVocabulary(token: token, id: id) }
        if addedIDs[token] != nil || addedLiterals.contains(where: { $0.scalars == normalized }) {
            throw CLIPTokenizerError.duplicateAddedToken(token: token)
        }
        let id = vocabularySize
        addedTokens.append(token)
        addedIDs[token] = id
        addedLiterals.append(Literal(scalars: normalized, id: id))
        return id
    }

    /// The id of a vocabulary entry or an added token (exact spelling, e.g. `"dog</w>"`, `"<new1>"`).
    public func id(of token: String) -> Int? {
        vocab[token] ?? addedIDs[token]
    }

    /// The token for an id (vocabulary entry or added token).
    public func token(for id: Int) -> String? {
        if let t = tokenByID[id] { return t }
        let k = id - baseVocabularySize
        return k >= 0 && k < addedTokens.count ? addedTokens[k] : nil
    }

    // MARK: - Encoding

    /// Content ids of `text`: no BOS/EOS, no padding, no truncation.
    public func encode(_ text: String) -> [Int] {
        var out: [Int] = []
        let raw = Array(text.unicodeScalars)
        for segment in Self.split(raw, 0..<raw.count, on: specialTokens) {
            switch segment {
            case let .token(id):
                out.append(id)
            case let .text(range):
                let normalized = CLIPNormalizer.normalize(raw[range])
                for part in Self.split(normalized, 0..<normalized.count, on: addedLiterals) {
                    switch part {
                    case let .token(id): out.append(id)
                    case let .text(r): encodePieces(normalized, r, into: &out)
                    }
                }
            }
        }
        return out
    }

    /// Content tokens of `text` (vocabulary spellings, e.g. `"dog</w>"`), for debugging.
    public func tokenize(_ text: String) -> [String] {
        encode(text).map { token(for: $0) ?? unkToken }
    }

    /// `[BOS] + encode(text).prefix(length - 2) + [EOS]`, padded with `padID` to `length`: what
    /// `tokenizer(text, padding="max_length", max_length=length, truncation=True).input_ids` gives.
    public func encodePadded(_ text: String, length: Int = 77) -> [Int] {
        precondition(length >= 2, "encodePadded: length \(length) leaves no room for BOS and EOS")
        var ids = [bosID]
        ids.reserveCapacity(length)
        ids.append(contentsOf: encode(text).prefix(length - 2))
        ids.append(eosID)
        ids.append(contentsOf: repeatElement(padID, count: length - ids.count))
        return ids
    }

    private func encodePieces(_ s: [Unicode.Scalar], _ range: Range<Int>, into out: inout [Int]) {
        var bytes: [UInt8] = []
        var symbols: [Int32] = []
        for piece in CLIPPreTokenizer.pieces(s, in: range) {
            bytes.removeAll(keepingCapacity: true)
            for u in s[piece] { UTF8.encode(u) { bytes.append($0) } }
            guard !bytes.isEmpty else { continue }
            symbols.removeAll(keepingCapacity: true)
            for b in bytes.dropLast() { symbols.append(byteIDs[Int(b)]) }
            symbols.append(finalByteIDs[Int(bytes[bytes.count - 1])])
            bpe(&symbols)
            for id in symbols { out.append(Int(id)) }
        }
    }

    /// Merges the lowest-ranked adjacent pair (every non-overlapping occurrence, left to right) until
    /// no adjacent pair has a rank.
    private func bpe(_ symbols: inout [Int32]) {
        var merged: [Int32] = []
        while symbols.count > 1 {
            var best = Merge(rank: .max, id: 0)
            var left: Int32 = 0, right: Int32 = 0
            for i in 0..<(symbols.count - 1) {
                if let m = merges[Self.pack(symbols[i], symbols[i + 1])], m.rank < best.rank {
                    best = m
                    left = symbols[i]
                    right = symbols[i + 1]
                }
            }
            if best.rank == .max { return }
            merged.removeAll(keepingCapacity: true)
            var i = 0
            while i < symbols.count {
                if i + 1 < symbols.count, symbols[i] == left, symbols[i + 1] == right {
                    merged.append(best.id)
                    i += 2
                } else {
                    merged.append(symbols[i])
                    i += 1
                }
            }
            swap(&symbols, &merged)
        }
    }

    private static func pack(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }

    private enum Segment {
        case text(Range<Int>)
        case token(Int)
    }

    /// Splits `s[range]` around the literals (leftmost-longest, non-overlapping), as tokenizers'
    /// added-vocabulary matcher does. Empty text segments are left out.
    private static func split(_ s: [Unicode.Scalar], _ range: Range<Int>, on literals: [Literal]) -> [Segment] {
        guard !literals.isEmpty else { return range.isEmpty ? [] : [.text(range)] }
        var out: [Segment] = []
        var start = range.lowerBound
        var i = range.lowerBound
        while i < range.upperBound {
            var best: Literal?
            for literal in literals where literal.scalars.count > (best?.scalars.count ?? 0) {
                let n = literal.scalars.count
                if range.upperBound - i >= n, s[i] == literal.scalars[0], s[i..<(i + n)].elementsEqual(literal.scalars) {
                    best = literal
                }
            }
            if let best {
                if start < i { out.append(.text(start..<i)) }
                out.append(.token(best.id))
                i += best.scalars.count
                start = i
            } else {
                i += 1
            }
        }
        if start < range.upperBound { out.append(.text(start..<range.upperBound)) }
        return out
    }

    // MARK: - Files

    private struct SpecialTokens {
        var bos = CLIPTokenizer.defaultBOS
        var eos = CLIPTokenizer.defaultEOS
        var pad: String?
        var unk: String?

        /// Takes bos/eos/pad/unk from a tokenizer_config.json or special_tokens_map.json object;
        /// a token is a string or an AddedToken object with "content".
        mutating func read(_ json: [String: Any], file: String) throws {
            func token(_ key: String) throws -> String? {
                guard let value = json[key], !(value is NSNull) else { return nil }
                if let s = value as? String { return s }
                if let d = value as? [String: Any], let s = d["content"] as? String { return s }
                throw CLIPTokenizerError.malformedConfig(file: file, reason: "\(key) is neither a string nor a token object")
            }
            if let t = try token("bos_token") { bos = t }
            if let t = try token("eos_token") { eos = t }
            if let t = try token("pad_token") { pad = t }
            if let t = try token("unk_token") { unk = t }
        }
    }

    private static func readData(_ url: URL) throws -> Data {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw CLIPTokenizerError.missingFile(path: url.path)
        }
        if isDirectory.boolValue { throw CLIPTokenizerError.unreadableFile(path: url.path, reason: "is a directory") }
        do {
            return try Data(contentsOf: url)
        } catch {
            throw CLIPTokenizerError.unreadableFile(path: url.path, reason: "\(error)")
        }
    }

    private static func readJSONObject(_ url: URL) throws -> [String: Any] {
        let data = try readData(url)
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw CLIPTokenizerError.malformedConfig(file: url.path, reason: "invalid JSON (\(error))")
        }
        guard let dict = object as? [String: Any] else {
            throw CLIPTokenizerError.malformedConfig(file: url.path, reason: "not a JSON object")
        }
        return dict
    }

    /// The BPE model of a tokenizers-format `tokenizer.json`: `model.vocab`, `model.merges` (as
    /// `["a", "b"]` pairs or `"a b"` strings; the position is reported as the line) and
    /// `added_tokens`.
    static func readFastTokenizer(_ url: URL) throws -> ([String: Int], ([(String, String)], [Int]), [(id: Int, entry: [String: Any])]) {
        let object = try readJSONObject(url)
        guard let model = object["model"] as? [String: Any], (model["type"] as? String) == "BPE",
              let rawVocab = model["vocab"] as? [String: Any], let rawMerges = model["merges"] as? [Any] else {
            throw CLIPTokenizerError.malformedVocabulary(file: url.path, reason: "expected a BPE \"model\" with \"vocab\" and \"merges\"")
        }
        let vocab = try validatedVocabulary(rawVocab, file: url.path)
        var pairs: [(String, String)] = [], lines: [Int] = []
        for (i, raw) in rawMerges.enumerated() {
            let parts = (raw as? [String]) ?? (raw as? String).map { $0.split(separator: " ", omittingEmptySubsequences: false).map(String.init) } ?? []
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw CLIPTokenizerError.malformedMerge(file: url.path, line: i + 1, text: "\(raw)")
            }
            pairs.append((parts[0], parts[1]))
            lines.append(i + 1)
        }
        var added: [(id: Int, entry: [String: Any])] = []
        for case let entry as [String: Any] in (object["added_tokens"] as? [Any]) ?? [] {
            if let id = entry["id"] as? Int, vocab[entry["content"] as? String ?? ""] != id { added.append((id, entry)) }
        }
        return (vocab, (pairs, lines), added)
    }

    static func readVocabulary(_ url: URL) throws -> [String: Int] {
        let data = try readData(url)
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw CLIPTokenizerError.malformedVocabulary(file: url.path, reason: "invalid JSON (\(error))")
        }
        guard let dict = object as? [String: Any] else {
            throw CLIPTokenizerError.malformedVocabulary(file: url.path, reason: "not a JSON object of token → id")
        }
        return try validatedVocabulary(dict, file: url.path)
    }

    /// token → id from decoded JSON (vocab.json, or `model.vocab` of tokenizer.json): every id a
    /// non-negative integer that fits the 32-bit ids BPE works with.
    private static func validatedVocabulary(_ dict: [String: Any], file: String) throws -> [String: Int] {
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(dict.count)
        for (token, value) in dict {
            guard let n = value as? NSNumber, let id = Int(exactly: n.doubleValue),
                  id >= 0, id <= Int(Int32.max)
            else {
                throw CLIPTokenizerError.malformedVocabulary(
                    file: file, reason: "\(String(reflecting: token)) has id \(value), not a non-negative integer")
            }
            vocab[token] = id
        }
        return vocab
    }

    /// The merge pairs of a merges.txt and the 1-based line of each. A first line starting with
    /// `#version` is a header; blank lines at the end are ignored, anywhere else they are an error.
    static func readMerges(_ url: URL) throws -> (pairs: [(String, String)], lines: [Int]) {
        let bytes = [UInt8](try readData(url))
        // Line ranges, split on LF at the byte level (a Character split would keep CRLF together).
        var lines: [Range<Int>] = []
        var start = 0
        for (i, b) in bytes.enumerated() where b == 0x0A {
            lines.append(start..<i)
            start = i + 1
        }
        lines.append(start..<bytes.count)
        func isBlank(_ r: Range<Int>) -> Bool { bytes[r].allSatisfy { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D } }
        while let last = lines.last, isBlank(last) { lines.removeLast() }

        var pairs: [(String, String)] = []
        var numbers: [Int] = []
        pairs.reserveCapacity(lines.count)
        numbers.reserveCapacity(lines.count)
        for (index, full) in lines.enumerated() {
            var r = full
            if let last = r.last, bytes[last] == 0x0D { r = r.lowerBound..<(r.upperBound - 1) }
            let line = bytes[r]
            guard let text = String(validating: line, as: UTF8.self) else {
                throw CLIPTokenizerError.malformedMerge(file: url.path, line: index + 1, text: String(decoding: line, as: UTF8.self))
            }
            if index == 0 && text.hasPrefix("#version") { continue }
            let spaces = line.indices.filter { bytes[$0] == 0x20 }
            guard spaces.count == 1, let space = spaces.first, space > r.lowerBound, space < r.upperBound - 1 else {
                throw CLIPTokenizerError.malformedMerge(file: url.path, line: index + 1, text: text)
            }
            pairs.append((String(decoding: bytes[r.lowerBound..<space], as: UTF8.self),
                          String(decoding: bytes[(space + 1)..<r.upperBound], as: UTF8.self)))
            numbers.append(index + 1)
        }
        return (pairs, numbers)
    }
}
