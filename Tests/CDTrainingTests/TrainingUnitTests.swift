import CDTestSupport
import CDModels
import CDTensor
import CDTraining
import Foundation
import Testing

/// What the unit tests of the training pieces share: the fixture's UNet parameter table, tokenizer
/// and token-embedding table (loaded once), and small helpers. Every size comes from the fixture.
enum UnitFixture {
    static let unetSpecs: [ParameterSpec] = {
        let url = Fixtures.model.appendingPathComponent("unet/config.json")
        let config = try! JSONDecoder().decode(UNet2DConditionConfig.self, from: Data(contentsOf: url))
        return UNet2DConditionModel.parameterSpecs(config)
    }()

    static let pipeline: StableDiffusionPipeline = try! StableDiffusionPipeline.load(Fixtures.model.path)

    static var tokenizer: CLIPTokenizer { pipeline.tokenizer }
    static var embeddingTable: Tensor { pipeline.models.textEncoder.weights["text_model.embeddings.token_embedding.weight"] }

    /// The attn2 layers of the table, as key prefixes ending in ".attn2." (found independently of TrainableSet).
    static var attn2Layers: [String] {
        var layers: [String] = []
        for spec in unetSpecs {
            guard let r = spec.key.range(of: ".attn2.") else { continue }
            let prefix = String(spec.key[..<r.upperBound])
            if !layers.contains(prefix) { layers.append(prefix) }
        }
        return layers
    }

    /// The TrainingError `body` throws; records an issue if it throws something else or nothing.
    static func trainingError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> TrainingError? {
        do {
            try body()
            Issue.record("expected a TrainingError, nothing was thrown", sourceLocation: sourceLocation)
        } catch let e as TrainingError {
            return e
        } catch {
            Issue.record("expected a TrainingError, got \(type(of: error)): \(error)", sourceLocation: sourceLocation)
        }
        return nil
    }
}

@Suite struct TrainableSetTests {
    let specs = UnitFixture.unetSpecs
    var all: [String] { specs.map(\.key) }

    @Test func crossattnKVSelectsEveryAttn2KeyAndValueWeight() throws {
        let layers = UnitFixture.attn2Layers
        #expect(!layers.isEmpty, "the fixture UNet has cross-attention layers")
        let keys = try TrainableSet.crossattnKV.keys(in: specs)
        #expect(keys.count == 2 * layers.count)
        let expected = all.filter { key in layers.contains { key == $0 + "to_k.weight" || key == $0 + "to_v.weight" } }
        #expect(expected.count == 2 * layers.count, "every attn2 layer has to_k.weight and to_v.weight in the table")
        #expect(keys == expected, "crossattn_kv keys in table order")
        #expect(!keys.contains { $0.contains(".attn1.") || $0.hasSuffix(".bias") || $0.contains("to_q") || $0.contains("to_out") })
        #expect(Set(keys).count == keys.count)
    }

    @Test func crossattnSelectsTheFiveAttn2TensorsOfEachLayer() throws {
        let layers = UnitFixture.attn2Layers
        let keys = try TrainableSet.crossattn.keys(in: specs)
        #expect(keys.count == 5 * layers.count)
        for layer in layers {
            let mine = keys.filter { $0.hasPrefix(layer) }
            #expect(Set(mine) == Set(["to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight", "to_out.0.bias"].map { layer + $0 }),
                    "\(layer): \(mine)")
        }
        #expect(keys == all.filter { k in layers.contains { k.hasPrefix($0) } }, "table order")
        // crossattn_kv ⊂ crossattn.
        #expect(Set(try TrainableSet.crossattnKV.keys(in: specs)).isSubset(of: Set(keys)))
    }

    @Test func patternsSelectTheUnionInTableOrderWithoutDuplicates() throws {
        let patterns = ["*attn2.to_k.weight", "up_blocks.1.*"]
        let keys = try TrainableSet.patterns(patterns).keys(in: specs)
        let toK = all.filter { $0.hasSuffix("attn2.to_k.weight") }
        let up1 = all.filter { $0.hasPrefix("up_blocks.1.") }
        let overlap = Set(toK).intersection(up1)
        try #require(!overlap.isEmpty, "the fixture's up_blocks.1 has cross-attention, so the patterns overlap")
        #expect(keys == all.filter { Set(toK).union(up1).contains($0) })
        #expect(keys.count == toK.count + up1.count - overlap.count, "no duplicates")
        #expect(keys != toK + up1.filter { !overlap.contains($0) }, "pattern order would differ from table order")
        // Pattern order does not matter.
        #expect(try TrainableSet.patterns(patterns.reversed()).keys(in: specs) == keys)
        // A repeated pattern adds nothing.
        #expect(try TrainableSet.patterns(patterns + patterns).keys(in: specs) == keys)
    }

    @Test func starSelectsTheWholeUNet() throws {
        #expect(try TrainableSet.patterns(["*"]).keys(in: specs) == all)
        #expect(try TrainableSet.patterns(["*", "conv_in.weight"]).keys(in: specs) == all)
    }

    @Test func aPatternMatchingNothingIsNamed() throws {
        let typo = "*attn2.to_kk.weight"
        let error = UnitFixture.trainingError { _ = try TrainableSet.patterns(["*attn2.to_k.weight", typo]).keys(in: specs) }
        guard case let .invalidSetting(field, _)? = error else { Issue.record("not invalidSetting: \(String(describing: error))"); return }
        #expect(field == "train")
        #expect("\(error!)".contains(typo), "\(error!)")
        let empty = UnitFixture.trainingError { _ = try TrainableSet.patterns([]).keys(in: specs) }
        if case .invalidSetting? = empty {} else { Issue.record("an empty pattern list: \(String(describing: empty))") }
        // A prefix without a wildcard is not a match (globs match the whole key).
        let prefix = UnitFixture.trainingError { _ = try TrainableSet.patterns(["conv_in"]).keys(in: specs) }
        #expect(prefix.map { "\($0)".contains("'conv_in'") } == true)
    }

    @Test func parsesTheJobFileNames() throws {
        #expect(try TrainableSet("crossattn_kv") == .crossattnKV)
        #expect(try TrainableSet("crossattn") == .crossattn)
        #expect(TrainableSet.crossattnKV.name == "crossattn_kv" && TrainableSet.crossattn.name == "crossattn")
        #expect(try TrainableSet(TrainableSet.crossattnKV.name) == .crossattnKV)
        for bad in ["bogus", "crossattn-kv", "CROSSATTN", ""] {
            let error = UnitFixture.trainingError { _ = try TrainableSet(bad) }
            guard case let .invalidSetting(field, reason)? = error else { Issue.record("'\(bad)': \(String(describing: error))"); continue }
            #expect(field == "train" && reason.contains("'\(bad)'"), "\(reason)")
        }
    }

    /// Glob semantics on a synthetic table: `?` is exactly one character, `*` any run (also empty,
    /// also across dots), everything else literal, and the whole key must match.
    @Test func globEdgeCases() throws {
        let table = ["a.b", "a.bc", "a..b", "ab", "abc.weight", "x.attn2.to_k.weight", "x.attn2.to_k.bias", "y.attn2.to_k.weight",
                     "*star", "q?"].map { ParameterSpec($0, [1]) }
        func select(_ patterns: [String]) throws -> [String] { try TrainableSet.patterns(patterns).keys(in: table) }
        #expect(try select(["a.b"]) == ["a.b"], "an exact key selects only itself")
        #expect(try select(["a?b"]) == ["a.b"], "? is one character (and '.' is literal elsewhere)")
        #expect(try select(["a??b"]) == ["a..b"])
        #expect(try select(["a.b?"]) == ["a.bc"], "? does not match the empty string")
        #expect(try select(["a.b*"]) == ["a.b", "a.bc"], "* matches the empty run")
        #expect(try select(["*.weight"]) == ["abc.weight", "x.attn2.to_k.weight", "y.attn2.to_k.weight"])
        #expect(try select(["*attn2*k*weight"]) == ["x.attn2.to_k.weight", "y.attn2.to_k.weight"], "several stars")
        #expect(try select(["*a*b*"]) == ["a.b", "a.bc", "a..b", "ab", "abc.weight", "x.attn2.to_k.bias"], "stars with backtracking")
        #expect(try select(["?.*.to_k.*"]) == ["x.attn2.to_k.weight", "x.attn2.to_k.bias", "y.attn2.to_k.weight"])
        #expect(try select(["**"]) == table.map(\.key))
        #expect(try select(["*star"]) == ["*star"], "a star also matches a literal '*'")
        #expect(try select(["q?"]) == ["q?"])
        for nothing in ["a", "a.", "b", "abc", "A.B", "a.b.c", "?", "x.attn2.to_k.weight.", "*.bias?"] {
            let error = UnitFixture.trainingError { _ = try select([nothing]) }
            #expect(error.map { "\($0)".contains("'\(nothing)'") } == true, "'\(nothing)' should match nothing: \(String(describing: error))")
        }
    }
}

@Suite struct ModifierTokensTests {
    let table = UnitFixture.embeddingTable
    /// The cd_train case's token, initializer and ids (the same rule in every fixture).
    let caseJSON: [String: Any] = try! JSONSerialization.jsonObject(
        with: Data(contentsOf: Fixtures.caseFile("cd_train.json"))) as! [String: Any]

    @Test func ktnUsesItsVocabularyEntry() throws {
        var tokenizer = UnitFixture.tokenizer
        let vocab = tokenizer.vocabularySize
        #expect(vocab == table.shape[0], "the tokenizer and the embedding table agree on the vocabulary size")
        let initializer = caseJSON["initializer_token"] as! String, expectedID = caseJSON["initializer_token_id"] as! Int
        #expect(initializer == "ktn" && expectedID == 42170)
        #expect(tokenizer.id(of: "ktn") == expectedID, "'ktn' is a vocabulary entry")
        #expect(tokenizer.encode("ktn").count > 1, "the word 'ktn' itself is several pieces (so encode alone would reject it)")

        let tokens = try ModifierTokens([("<new1>", "ktn")], tokenizer: &tokenizer, table: table)
        #expect(tokens.names == ["<new1>"])
        #expect(tokens.ids == [vocab])
        #expect(tokens.ids == [caseJSON["modifier_token_id"] as! Int])
        #expect(tokens.initializerIDs == [expectedID])
        #expect(tokens.rows.shape == [1, table.shape[1]])
        #expect(tokens.rows[0].array == table[expectedID].array, "the new row is the initializer's row, bit for bit")
        // The rows are a copy: the table is not aliased.
        #expect(tokens.rows.storage !== table.storage)
        // The tokenizer learned the token.
        #expect(tokenizer.vocabularySize == vocab + 1)
        #expect(tokenizer.id(of: "<new1>") == vocab)
        #expect(tokenizer.encode("photo of a <new1> dog").contains(vocab))
        #expect(tokens.override.rowIds == [vocab])
    }

    @Test func twoTokensGetConsecutiveIDs() throws {
        var tokenizer = UnitFixture.tokenizer
        let vocab = tokenizer.vocabularySize
        let tokens = try ModifierTokens([("<new1>", "ktn"), ("<new2>", "dog")], tokenizer: &tokenizer, table: table)
        #expect(tokens.names == ["<new1>", "<new2>"])
        #expect(tokens.ids == [vocab, vocab + 1])
        #expect(tokenizer.encode("<new1> <new2>") == [vocab, vocab + 1])
        // "dog" is itself a vocabulary entry (the non-word-final piece), so the same rule as for
        // 'ktn' applies: its entry, what transformers 4's encode(["dog"]) gave. The word "dog"
        // encodes to one token too, but a different one ("dog</w>").
        let dogEntry = try #require(tokenizer.id(of: "dog"))
        #expect(tokens.initializerIDs == [tokenizer.id(of: "ktn")!, dogEntry])
        #expect(tokenizer.encode("dog").count == 1)
        #expect(tokens.rows[0].array == table[tokens.initializerIDs[0]].array)
        #expect(tokens.rows[1].array == table[dogEntry].array)
        #expect(tokens.rows[0].array != tokens.rows[1].array)
    }

    /// An initializer that is not a vocabulary entry but encodes to exactly one token uses that token.
    @Test func aSingleTokenWordThatIsNoEntryUsesItsEncoding() throws {
        var tokenizer = UnitFixture.tokenizer
        let word = "Dog"  // normalized (lower-cased) to "dog</w>"; no entry spelled "Dog"
        try #require(tokenizer.id(of: word) == nil)
        let encoded = tokenizer.encode(word)
        try #require(encoded.count == 1)
        let tokens = try ModifierTokens([("<new1>", word)], tokenizer: &tokenizer, table: table)
        #expect(tokens.initializerIDs == encoded)
        #expect(tokens.rows[0].array == table[encoded[0]].array)
    }

    @Test func aSeveralPieceInitializerIsRejected() throws {
        var tokenizer = UnitFixture.tokenizer
        // A long rare word that BPE splits, and that is no vocabulary entry.
        let word = try #require(["photosynthesizingly", "zyxwvutsrq", "qwertyuiopasdf"].first {
            tokenizer.id(of: $0) == nil && tokenizer.encode($0).count > 1
        })
        let pieces = tokenizer.encode(word).count
        let error = UnitFixture.trainingError { _ = try ModifierTokens([("<new1>", "ktn"), ("<new2>", word)], tokenizer: &tokenizer, table: table) }
        guard case let .invalidToken(token, reason)? = error else { Issue.record("not invalidToken: \(String(describing: error))"); return }
        #expect(token == "<new2>")
        #expect(reason.contains("'\(word)'") && reason.contains("encodes to \(pieces)"), "\(reason)")
        #expect("\(error!)".contains("<new2>"))
        // Nothing at all is no token either.
        var fresh = UnitFixture.tokenizer
        let empty = UnitFixture.trainingError { _ = try ModifierTokens([("<new1>", "")], tokenizer: &fresh, table: table) }
        if case .invalidToken(token: "<new1>", _)? = empty {} else { Issue.record("empty initializer: \(String(describing: empty))") }
    }

    @Test func aVocabularyEntryOrADuplicateCannotBeAdded() throws {
        var tokenizer = UnitFixture.tokenizer
        let inVocab = UnitFixture.trainingError { _ = try ModifierTokens([("dog", "ktn")], tokenizer: &tokenizer, table: table) }
        guard case let .invalidToken(token, reason)? = inVocab else { Issue.record("vocabulary entry: \(String(describing: inVocab))"); return }
        #expect(token == "dog" && reason.contains("vocabulary"), "\(reason)")

        var t2 = UnitFixture.tokenizer
        let duplicate = UnitFixture.trainingError { _ = try ModifierTokens([("<new1>", "ktn"), ("<new1>", "dog")], tokenizer: &t2, table: table) }
        guard case let .invalidToken(dupToken, dupReason)? = duplicate else { Issue.record("duplicate: \(String(describing: duplicate))"); return }
        #expect(dupToken == "<new1>" && dupReason.contains("already"), "\(dupReason)")

        // Already added to the tokenizer before (e.g. by an earlier job on the same tokenizer).
        var t3 = UnitFixture.tokenizer
        _ = try t3.addToken("<new1>")
        let again = UnitFixture.trainingError { _ = try ModifierTokens([("<new1>", "ktn")], tokenizer: &t3, table: table) }
        if case .invalidToken(token: "<new1>", _)? = again {} else { Issue.record("already added: \(String(describing: again))") }
    }
}
