import CDTestSupport
import Foundation
import Testing
@testable import CDModels

/// cases/tokenizer.json: transformers 5 `CLIPTokenizer` outputs for the fixture's tokenizer folder.
private struct TokenizerCases: Decodable {
    struct Prompt: Decodable {
        let key: String
        let text: String
        let inputIds: [Int]
        let tokens: [String]
        let nContentTokens: Int?
    }
    struct Added: Decodable {
        let token: String
        let id: Int
        let vocabSizeAfter: Int
        let prompts: [Prompt]
    }
    let maxLength: Int
    let bosId: Int
    let eosId: Int
    let padId: Int
    let vocabSize: Int
    let prompts: [Prompt]
    let addedToken: Added

    static func load() throws -> TokenizerCases {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(TokenizerCases.self, from: Data(contentsOf: Fixtures.caseFile("tokenizer.json")))
    }
}

/// One spec §8.3 test vector (HF-v5 column): content ids without BOS/EOS.
struct TokenizerVector: Sendable, CustomTestStringConvertible {
    let text: String
    let ids: [Int]
    var testDescription: String { String(reflecting: text) }
}

@Suite struct CLIPTokenizerTests {
    static let shared: Result<CLIPTokenizer, any Error> = Result {
        try CLIPTokenizer(directory: Fixtures.model.appendingPathComponent("tokenizer"))
    }

    func tokenizer() throws -> CLIPTokenizer { try Self.shared.get() }

    /// The fixture's tokens for a prompt, from our content tokens: BOS + first (length-2) + EOS.
    func expectedTokens(_ tok: CLIPTokenizer, _ text: String, length: Int) -> [String] {
        ["<|startoftext|>"] + tok.tokenize(text).prefix(length - 2) + ["<|endoftext|>"]
    }

    // MARK: - Fixture

    @Test func loadsFixtureTokenizerFolder() throws {
        let cases = try TokenizerCases.load()
        let tok = try tokenizer()
        #expect(tok.vocabularySize == cases.vocabSize)
        #expect(tok.baseVocabularySize == cases.vocabSize)
        #expect(tok.bosID == cases.bosId)
        #expect(tok.eosID == cases.eosId)
        #expect(tok.padID == cases.padId)
        #expect(tok.unkID == 49407)
        #expect(tok.modelMaxLength == cases.maxLength)
        #expect(tok.addedTokens.isEmpty)
        #expect(tok.id(of: "!") == 0)
        #expect(tok.id(of: "a</w>") == 320)
        #expect(tok.id(of: "in") == 512)
        #expect(tok.id(of: "jekyll</w>") == 49405)
        #expect(tok.id(of: "<|startoftext|>") == 49406)
        #expect(tok.id(of: "<new1>") == nil)
        #expect(tok.token(for: 1929) == "dog</w>")
    }

    @Test func everyFixturePromptMatchesTransformers() throws {
        let cases = try TokenizerCases.load()
        let tok = try tokenizer()
        #expect(cases.prompts.count == 18)
        var passed = 0
        for p in cases.prompts {
            let ids = tok.encodePadded(p.text, length: cases.maxLength)
            let tokens = expectedTokens(tok, p.text, length: cases.maxLength)
            let content = tok.encode(p.text)
            #expect(ids == p.inputIds, "\(p.key): input_ids")
            #expect(tokens == p.tokens, "\(p.key): tokens")
            if let n = p.nContentTokens { #expect(min(content.count, cases.maxLength - 2) == n, "\(p.key): n_content_tokens") }
            if ids == p.inputIds && tokens == p.tokens { passed += 1 }
        }
        #expect(passed == cases.prompts.count, "\(passed) of \(cases.prompts.count) fixture prompts match")
    }

    @Test func addedTokenPromptsMatchTransformers() throws {
        let cases = try TokenizerCases.load()
        var tok = try tokenizer()
        let id = try tok.addToken(cases.addedToken.token)
        #expect(id == cases.addedToken.id)
        #expect(tok.vocabularySize == cases.addedToken.vocabSizeAfter)
        #expect(tok.addedTokens == [cases.addedToken.token])
        #expect(tok.id(of: cases.addedToken.token) == cases.addedToken.id)
        #expect(tok.token(for: id) == cases.addedToken.token)
        #expect(cases.addedToken.prompts.count == 4)
        for p in cases.addedToken.prompts {
            #expect(tok.encodePadded(p.text, length: cases.maxLength) == p.inputIds, "\(p.key): input_ids")
            #expect(expectedTokens(tok, p.text, length: cases.maxLength) == p.tokens, "\(p.key): tokens")
        }
        // Without the added token the same prompts go through BPE instead.
        let plain = try tokenizer()
        for p in cases.addedToken.prompts { #expect(!plain.encode(p.text).contains(id), "\(p.key)") }
    }

    @Test func longPromptTruncatesKeepingEOS() throws {
        let cases = try TokenizerCases.load()
        let tok = try tokenizer()
        let p = try #require(cases.prompts.first { $0.key == "long_100_words" })
        #expect(p.text.split(separator: " ").count == 100)
        let content = tok.encode(p.text)
        #expect(content.count >= 100)
        let ids = tok.encodePadded(p.text)
        #expect(ids.count == 77)
        #expect(ids[0] == 49406)
        #expect(ids[76] == 49407)
        #expect(Array(ids[1..<76]) == Array(content.prefix(75)))
        #expect(ids == p.inputIds)
        // Other lengths: BOS + first length-2 + EOS; a short prompt is padded with pad (= EOS).
        #expect(tok.encodePadded(p.text, length: 5) == [49406] + content.prefix(3) + [49407])
        #expect(tok.encodePadded("a dog", length: 6) == [49406, 320, 1929, 49407, 49407, 49407])
        #expect(tok.encodePadded("", length: 2) == [49406, 49407])
    }

    // MARK: - Spec §8.3 vectors (HF-v5 column)

    static let specVectors: [TokenizerVector] = [
        .init(text: "a photo of a cat", ids: [320, 1125, 539, 320, 2368]),
        .init(text: "A  Photo\tof\n\nA CAT!!", ids: [320, 1125, 539, 320, 2368, 748]),
        .init(text: "don't you'll I'M", ids: [847, 713, 592, 1342, 328, 880]),
        .init(text: "1234 3.14 x2", ids: [272, 273, 274, 275, 274, 269, 272, 275, 343, 273]),
        .init(text: "caf\u{E9} na\u{EF}ve Z\u{FC}rich", ids: [15304, 1097, 35689, 563, 89, 6522, 4021]),
        .init(text: "emoji \u{1F431}\u{1F525} ok", ids: [16327, 35710, 3016, 2481]),
        .init(text: "日本語 テキスト", ids: [39121, 44353, 34002, 508, 2429, 228, 47121, 32421, 486]),
        .init(text: "hello,world...", ids: [3306, 267, 1002, 678]),
        .init(text: "&amp; &lt;b&gt; AT&amp;T", ids: [261, 6259, 282, 261, 3333, 282, 321, 261, 4725, 282, 536, 261, 6259, 282, 339]),
        .init(text: "\u{FB01}ne \u{FB02}ow", ids: [171, 105, 223, 1422, 171, 105, 224, 2250]),
        .init(text: "\u{201C}smart quotes\u{201D} \u{2014} dash", ids: [728, 506, 4115, 5808, 728, 507, 2005, 10206]),
        .init(text: "a <|endoftext|> b", ids: [320, 49407, 321]),
    ]

    @Test(arguments: specVectors) func specVector(_ v: TokenizerVector) throws {
        let tok = try tokenizer()
        #expect(tok.encode(v.text) == v.ids)
        #expect(tok.encodePadded(v.text) == [49406] + v.ids + [49407] + Array(repeating: 49407, count: 75 - v.ids.count))
    }

    // MARK: - Normalization and pre-tokenization

    @Test func normalizationIsNFCWhitespaceCollapseAndLowercase() throws {
        let tok = try tokenizer()
        // NFC: decomposed accents give the precomposed ids.
        #expect(tok.encode("cafe\u{301} nai\u{308}ve Zu\u{308}rich") == [15304, 1097, 35689, 563, 89, 6522, 4021])
        // Every Unicode White_Space run is one separator (ideographic, no-break, line separator, hair, NEL).
        let basic = [320, 1125, 539, 320, 1929]
        #expect(tok.encode("a\u{3000}photo\u{A0}of\u{2028}a\u{200A}\u{85}dog") == basic)
        #expect(tok.encode("\u{2003}a photo of a dog\r\n") == basic)
        // Zero-width space is not White_Space: it is a symbol, not a separator.
        #expect(tok.encode("a\u{200B}dog") != tok.encode("a dog"))
        // Non-ASCII lower-casing, and ß stays ß.
        #expect(tok.encode("\u{C9}COLE") == tok.encode("\u{E9}cole"))
        #expect(tok.encode("STRASSE") == tok.encode("strasse"))
        #expect(tok.encode("Stra\u{DF}e") != tok.encode("strasse"))
        // No HTML unescaping, no ftfy.
        #expect(tok.encode("&amp;") == [261, 6259, 282])
    }

    @Test func preTokenizerPieces() throws {
        let tok = try tokenizer()
        // Contractions only after an apostrophe U+0027, only the seven listed.
        #expect(tok.tokenize("it's") == ["it</w>", "'s</w>"])
        #expect(tok.tokenize("we'd've") == ["we</w>", "'d</w>", "'ve</w>"])
        #expect(tok.tokenize("o'x") == ["o</w>", "'</w>", "x</w>"])
        // Digits one at a time; other numbers (\p{N}) too.
        #expect(tok.tokenize("42") == ["4</w>", "2</w>"])
        #expect(tok.encode("\u{00BD}\u{00BD}") == tok.encode("\u{00BD}") + tok.encode("\u{00BD}"))
        // A punctuation run is one piece; letters split it.
        #expect(tok.tokenize("!!!") == ["!!!</w>"])
        #expect(tok.tokenize("a-b") == ["a</w>", "-</w>", "b</w>"])
        // Empty and whitespace-only text.
        #expect(tok.encode("") == [])
        #expect(tok.encode(" \t\n ") == [])
    }

    @Test func specialTokensInTextBecomeTheirIds() throws {
        let tok = try tokenizer()
        #expect(tok.encode("<|startoftext|>a dog<|endoftext|>") == [49406, 320, 1929, 49407])
        #expect(tok.encode("!!<|endoftext|>!!") == [748, 49407, 748])
        #expect(tok.encode("<|endoftext|><|endoftext|>") == [49407, 49407])
        // Special tokens match the raw text exactly: an upper-case spelling is normal text, which the
        // ByteLevel pre-tokenizer's GPT-2 split cuts into `<|`, the letters and `|>`.
        let upper = tok.encode("<|ENDOFTEXT|>")
        #expect(!upper.contains(49407))
        #expect(upper == tok.encode("<|") + tok.encode("endoftext") + tok.encode("|>"))
        #expect(tok.encode("<|endoftext|>!") != tok.encode("<|ENDOFTEXT|>!"))
    }

    // MARK: - Added tokens

    @Test func addTokenAssignsIdsAndRejectsBadTokens() throws {
        var tok = try tokenizer()
        #expect(try tok.addToken("<new1>") == 49408)
        #expect(try tok.addToken("<new2>") == 49409)
        #expect(tok.vocabularySize == 49410)
        #expect(tok.addedTokens == ["<new1>", "<new2>"])
        #expect(tok.id(of: "<new2>") == 49409)
        #expect(tok.encode("<new2> <new1><new1>") == [49409, 49408, 49408])

        #expect(throws: CLIPTokenizerError.duplicateAddedToken(token: "<new1>")) { try tok.addToken("<new1>") }
        #expect(throws: CLIPTokenizerError.duplicateAddedToken(token: "<NEW1>")) { try tok.addToken("<NEW1>") }
        #expect(throws: CLIPTokenizerError.tokenInVocabulary(token: "dog</w>", id: 1929)) { try tok.addToken("dog</w>") }
        #expect(throws: CLIPTokenizerError.tokenInVocabulary(token: "<|endoftext|>", id: 49407)) { try tok.addToken("<|endoftext|>") }
        #expect(throws: CLIPTokenizerError.invalidAddedToken(token: "", reason: "empty or whitespace only")) { try tok.addToken("") }
        #expect(throws: CLIPTokenizerError.invalidAddedToken(token: " \t\u{3000}", reason: "empty or whitespace only")) {
            try tok.addToken(" \t\u{3000}")
        }
        #expect(tok.vocabularySize == 49410, "failed adds change nothing")
    }

    @Test func addedTokensMatchAnywhereLongestFirst() throws {
        var tok = try tokenizer()
        let t = try tok.addToken("<t>")
        let t1 = try tok.addToken("<t>_1")
        #expect(tok.encode("<t>_1 <t>") == [t1, t])
        #expect(tok.encode("<T>_1<t>_2") == [t1, t] + tok.encode("_2"))
        // Inside a word, with BPE on each side independently.
        #expect(tok.encode("dogs<t>cats") == tok.encode("dogs") + [t] + tok.encode("cats"))
        // An added token written in upper case with its own casing matches the normalized text.
        var upper = try tokenizer()
        let s = try upper.addToken("<SKS>")
        #expect(upper.encode("a <sks> dog") == [320, s, 1929])
        #expect(upper.id(of: "<SKS>") == s)
        #expect(upper.tokenize("<sks>") == ["<SKS>"])
        // Added tokens are matched after whitespace collapsing, on both sides.
        var spaced = try tokenizer()
        let sd = try spaced.addToken("sks  Dog")
        #expect(spaced.encode("a sks \t\n dog") == [320, sd])
        #expect(spaced.encode("a SKS\u{3000}DOG") == [320, sd])
    }

    // MARK: - BPE on a small vocabulary

    /// A vocabulary of the byte characters a, b, c (and with `</w>`) plus merged entries.
    static func smallVocab(_ extra: [String]) -> [String: Int] {
        var v: [String: Int] = ["<|startoftext|>": 0, "<|endoftext|>": 1]
        for t in ["a", "b", "c", "a</w>", "b</w>", "c</w>"] + extra { v[t] = v.count }
        return v
    }

    @Test func bpeMergesLowestRankFirstAndEveryOccurrence() throws {
        let v = Self.smallVocab(["bc</w>", "ab", "ab</w>", "abab</w>", "aa", "aa</w>", "aaa</w>"])
        let tok = try CLIPTokenizer(
            vocab: v, merges: [("b", "c</w>"), ("a", "b"), ("a", "b</w>"), ("ab", "ab</w>"), ("a", "a"), ("aa", "a</w>")])
        // Rank decides, not position: (b, c</w>) before (a, b).
        #expect(tok.tokenize("abc") == ["a", "bc</w>"])
        #expect(tok.tokenize("abab") == ["abab</w>"])
        // a a a</w> → aa a</w> → aaa</w> (overlapping pairs: the left one wins).
        #expect(tok.tokenize("aaa") == ["aaa</w>"])
        // a a a a a</w>: (a, a) merges at 0 and 2 in one pass → aa aa a</w> → aa aaa</w>.
        #expect(tok.tokenize("aaaaa") == ["aa", "aaa</w>"])
        // a a a a</w>: (a, a) merges at 0; the a at 2 pairs only with a</w>, which has no rank.
        #expect(tok.tokenize("aaaa") == ["aa", "a", "a</w>"])
        // Characters without a vocabulary entry become unk (= eos).
        #expect(tok.encode("d") == [1])
        #expect(tok.encode("adb") == [v["a"]!, 1, v["b</w>"]!])
        #expect(tok.vocabularySize == v.count)
    }

    // MARK: - Loading from files

    func temporaryDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cd-tok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    func write(_ text: String, _ name: String, in dir: URL) throws {
        try Data(text.utf8).write(to: dir.appendingPathComponent(name))
    }

    static let smallVocabJSON = #"{"<|startoftext|>": 0, "<|endoftext|>": 1, "a": 2, "b": 3, "b</w>": 4, "ab": 5, "ab</w>": 6, "!": 7, "!</w>": 8}"#

    @Test func loadsSmallFolderWithHeaderCRLFAndTrailingBlankLines() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try write(Self.smallVocabJSON, "vocab.json", in: dir)
        try write("#version: 0.2\r\na b\r\na b</w>\r\n\r\n\n", "merges.txt", in: dir)
        let tok = try CLIPTokenizer(directory: dir)
        #expect(tok.tokenize("ab ab") == ["ab</w>", "ab</w>"])
        // "a</w>" is not in this vocabulary: the final symbol is unk.
        #expect(tok.tokenize("aba") == ["ab", "<|endoftext|>"])
        #expect(tok.encodePadded("ab", length: 4) == [0, 6, 1, 1])
        #expect(tok.modelMaxLength == 77)
        #expect((tok.bosID, tok.eosID, tok.padID, tok.unkID) == (0, 1, 1, 1))
    }

    @Test func configSetsPadAndLengthButPadIsNotSpecialInText() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try write(Self.smallVocabJSON, "vocab.json", in: dir)
        try write("#version: 0.2\na b\na b</w>\n", "merges.txt", in: dir)
        // SD2 style: pad "!" (id 7) as an AddedToken object; model_max_length 6.
        try write(#"{"model_max_length": 6, "pad_token": {"content": "!", "special": true}, "bos_token": "<|startoftext|>"}"#,
                  "tokenizer_config.json", in: dir)
        let tok = try CLIPTokenizer(directory: dir)
        #expect(tok.padID == 7)
        #expect(tok.padToken == "!")
        #expect(tok.modelMaxLength == 6)
        #expect(tok.encodePadded("ab", length: tok.modelMaxLength) == [0, 6, 1, 7, 7, 7])
        #expect(tok.encode("ab!") == [6, 8], "a literal ! is BPE'd, not the pad id")
    }

    @Test func savedAddedTokensAreAddedAgain() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try write(Self.smallVocabJSON, "vocab.json", in: dir)
        try write("#version: 0.2\na b\na b</w>\n", "merges.txt", in: dir)
        try write(#"""
            {"added_tokens_decoder": {
              "1": {"content": "<|endoftext|>", "normalized": false, "special": true},
              "10": {"content": "<new2>", "normalized": true, "special": false},
              "9": {"content": "<new1>", "normalized": true, "special": false}}}
            """#, "tokenizer_config.json", in: dir)
        let tok = try CLIPTokenizer(directory: dir)
        #expect(tok.addedTokens == ["<new1>", "<new2>"])
        #expect(tok.encode("ab<new2><new1>") == [6, 10, 9])
        #expect(tok.vocabularySize == 11)

        try write(#"{"added_tokens_decoder": {"12": {"content": "<gap>", "normalized": true, "special": false}}}"#,
                  "tokenizer_config.json", in: dir)
        let error = #expect(throws: CLIPTokenizerError.self) { try CLIPTokenizer(directory: dir) }
        guard case let .invalidAddedToken(token, reason) = error else {
            Issue.record("\(String(describing: error))")
            return
        }
        #expect(token == "<gap>" && reason.contains("id 12"))
    }

    @Test func missingFilesAreNamed() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let vocab = dir.appendingPathComponent("vocab.json").path
        let merges = dir.appendingPathComponent("merges.txt").path
        #expect(throws: CLIPTokenizerError.missingFile(path: vocab)) { try CLIPTokenizer(directory: dir) }
        try write(Self.smallVocabJSON, "vocab.json", in: dir)
        #expect(throws: CLIPTokenizerError.missingFile(path: merges)) { try CLIPTokenizer(directory: dir) }
        try FileManager.default.createDirectory(atPath: merges, withIntermediateDirectories: false)
        #expect(throws: CLIPTokenizerError.unreadableFile(path: merges, reason: "is a directory")) { try CLIPTokenizer(directory: dir) }
        #expect(CLIPTokenizerError.missingFile(path: vocab).description.contains("vocab.json"))
    }

    @Test func malformedVocabularyIsRejected() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try write("#version: 0.2\na b\n", "merges.txt", in: dir)
        let path = dir.appendingPathComponent("vocab.json").path
        for bad in [#"{"a": 0, "b": "#, #"["a", "b"]"#, #"{"a": "zero"}"#, #"{"a": -1}"#, #"{"a": 1.5}"#] {
            try write(bad, "vocab.json", in: dir)
            let error = #expect(throws: CLIPTokenizerError.self, "\(bad)") { try CLIPTokenizer(directory: dir) }
            guard case let .malformedVocabulary(file, _) = error else {
                Issue.record("\(bad): \(String(describing: error))")
                continue
            }
            #expect(file == path)
        }
        // Two tokens with one id.
        try write(#"{"<|startoftext|>": 0, "<|endoftext|>": 1, "a": 2, "b": 2}"#, "vocab.json", in: dir)
        let error = #expect(throws: CLIPTokenizerError.self) { try CLIPTokenizer(directory: dir) }
        guard case let .malformedVocabulary(_, reason) = error else {
            Issue.record("\(String(describing: error))")
            return
        }
        #expect(reason.contains("id 2"))
    }

    @Test func badMergeLinesNameFileAndLine() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try write(Self.smallVocabJSON, "vocab.json", in: dir)
        let path = dir.appendingPathComponent("merges.txt").path
        let cases: [(String, CLIPTokenizerError)] = [
            ("#version: 0.2\na b\na b </w>\n", .malformedMerge(file: path, line: 3, text: "a b </w>")),
            ("#version: 0.2\na b\nab\n", .malformedMerge(file: path, line: 3, text: "ab")),
            ("#version: 0.2\n\na b\n", .malformedMerge(file: path, line: 2, text: "")),
            ("a b\na  b\n", .malformedMerge(file: path, line: 2, text: "a  b")),
            ("#version: 0.2\na b\nb a\n", .mergeTokenNotInVocabulary(file: path, line: 3, token: "ba")),
            ("#version: 0.2\nx b\n", .mergeTokenNotInVocabulary(file: path, line: 2, token: "x")),
            ("#version: 0.2\na y\n", .mergeTokenNotInVocabulary(file: path, line: 2, token: "y")),
        ]
        for (text, error) in cases {
            try write(text, "merges.txt", in: dir)
            #expect(throws: error, "\(String(reflecting: text))") { try CLIPTokenizer(directory: dir) }
        }
        #expect(CLIPTokenizerError.malformedMerge(file: path, line: 3, text: "ab").description.contains("merges.txt:3"))
        // No header: the first line is a merge.
        try write("a b\na b</w>", "merges.txt", in: dir)
        #expect(try CLIPTokenizer(directory: dir).tokenize("ab") == ["ab</w>"])
    }

    @Test func specialTokenMissingFromVocabularyIsAnError() throws {
        #expect(throws: CLIPTokenizerError.specialTokenNotInVocabulary(file: "arguments", role: "bos", token: "<s>")) {
            try CLIPTokenizer(vocab: ["<|endoftext|>": 0], merges: [], bosToken: "<s>")
        }
    }

    @Test func loadingTheFullVocabularyIsFast() throws {
        let start = ContinuousClock.now
        let tok = try CLIPTokenizer(directory: Fixtures.model.appendingPathComponent("tokenizer"))
        let elapsed = ContinuousClock.now - start
        #expect(tok.vocabularySize == 49408)
        // Generous bound (debug build, shared 2-core machine); typical is far below.
        #expect(elapsed < .seconds(5), "loading took \(elapsed)")
    }
}

@Suite struct StandardCLIPVocabularyTests {
    @Test func shippedVocabularyEqualsTheFixtureTokenizer() throws {
        let standard = try CLIPTokenizer.standard()
        let fixture = try CLIPTokenizer(directory: Fixtures.model.appendingPathComponent("tokenizer"))
        #expect(standard.vocabularySize == fixture.vocabularySize)
        let mismatches = (0..<fixture.vocabularySize).filter { standard.token(for: $0) != fixture.token(for: $0) }
        #expect(mismatches.isEmpty, "\(mismatches.count) vocabulary entries differ, first id \(mismatches.first ?? -1)")
        #expect(standard.encodePadded("a photo of a cat, 4k!") == fixture.encodePadded("a photo of a cat, 4k!"))
    }
}

@Suite struct FastTokenizerFileTests {
    /// transformers 5 may save only tokenizer.json; the folder must load the same tokenizer.
    @Test func tokenizerJSONAloneLoadsTheSameTokenizer() throws {
        let source = Fixtures.model.appendingPathComponent("tokenizer")
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("cd-tok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        for name in ["tokenizer.json", "tokenizer_config.json"] {
            try FileManager.default.copyItem(at: source.appendingPathComponent(name), to: tmp.appendingPathComponent(name))
        }
        let fast = try CLIPTokenizer(directory: tmp), full = try CLIPTokenizer(directory: source)
        #expect(fast.vocabularySize == full.vocabularySize)
        for text in ["a photo of a <|endoftext|> cat", "café naïve Zürich", "1234 3.14 x2", ""] {
            #expect(fast.encodePadded(text) == full.encodePadded(text), "\(text)")
        }
        try Data(#"{"model": {"type": "WordPiece"}}"#.utf8).write(to: tmp.appendingPathComponent("tokenizer.json"))
        #expect(throws: CLIPTokenizerError.self) { _ = try CLIPTokenizer(directory: tmp) }
    }
}
