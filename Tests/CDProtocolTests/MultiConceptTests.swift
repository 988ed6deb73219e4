@testable import CDProtocol
import Testing

@Suite("Multi-concept jobs")
struct MultiConceptTests {
    func concept(_ prompt: String, _ folder: String, _ extra: String = "") -> String {
        "\n[[concept]]\ninstance_prompt = \"\(prompt)\"\ninstance_images = \"\(folder)\"\nclass_prompt = \"thing\"\n\(extra)\n"
    }

    @Test func ownTokensGetDiffusersInitializersInOrder() throws {
        let job = try JobSpec.parse(toml: "model = \"m\"\n"
            + concept("photo of a <new1> cat", "cat", "modifier_token = \"<new1>\"")
            + concept("photo of a <new2> wooden pot", "pot", "modifier_token = \"<new2>\"")
            + concept("photo of a <new3> barn", "barn", "modifier_token = \"<new3>\""), file: "j.toml")
        #expect(job.modifierTokens == [
            ModifierTokenSpec(token: "<new1>", initializerToken: "ktn"),
            ModifierTokenSpec(token: "<new2>", initializerToken: "pll"),
            ModifierTokenSpec(token: "<new3>", initializerToken: "ucd"),
        ])
    }

    @Test func sharedTokenTakesTheInitializerGivenOnce() throws {
        let job = try JobSpec.parse(toml: "model = \"m\"\n"
            + concept("photo of a <cat> sleeping", "cat1", "modifier_token = \"<cat>\"")
            + concept("photo of a <cat> jumping", "cat2", "modifier_token = \"<cat>\"\ninitializer_token = \"cat\"")
            + concept("photo of a <pot>", "pot", "modifier_token = \"<pot>\""), file: "j.toml")
        #expect(job.concepts.map(\.initializerToken) == ["cat", "cat", "pll"])
        #expect(job.modifierTokens == [
            ModifierTokenSpec(token: "<cat>", initializerToken: "cat"),
            ModifierTokenSpec(token: "<pot>", initializerToken: "pll"),
        ])
    }

    @Test func conceptWithoutTokenTrainsOnlyKV() throws {
        let job = try JobSpec.parse(toml: "model = \"m\"\n"
            + concept("photo of a <new1> cat", "cat", "modifier_token = \"<new1>\"")
            + concept("photo of a moongate", "gate"), file: "j.toml")
        #expect(job.concepts.map(\.modifierToken) == ["<new1>", nil])
        #expect(job.concepts.map(\.initializerToken) == ["ktn", nil])
        #expect(job.modifierTokens.map(\.token) == ["<new1>"])
    }

    @Test func aFourthTokenNeedsAnInitializer() {
        let toml = "model = \"m\"\n" + (1...4).map { concept("photo of <t\($0)>", "d\($0)", "modifier_token = \"<t\($0)>\"") }.joined()
        #expect(fields(toml) == ["concept[3].initializer_token"])
        #expect(fields(toml + "initializer_token = \"dog\"\n") == [])
    }

    @Test func sharedTokenMustAppearInEachOfItsConcepts() {
        let toml = "model = \"m\"\n"
            + concept("photo of a <cat> sleeping", "cat1", "modifier_token = \"<cat>\"")
            + concept("photo of a cat jumping", "cat2", "modifier_token = \"<cat>\"")
        #expect(fields(toml) == ["concept[1].modifier_token"])
    }

    @Test func classPromptIsCheckedPerConcept() {
        let toml = "model = \"m\"\n" + concept("a <a>", "a", "modifier_token = \"<a>\"")
            + "\n[[concept]]\ninstance_prompt = \"a <b>\"\ninstance_images = \"b\"\nmodifier_token = \"<b>\"\n"
        #expect(fields(toml) == ["concept[1].class_prompt"])
    }

    @Test func tokensAreMatchedLikeTheTokenizerDoes() {
        // Prompts are lower-cased before added tokens are found: case does not matter in prompts,
        // and two tokens that differ only in case would be one.
        #expect(fields("model = \"m\"\n" + concept("photo of a <new1> cat", "cat", "modifier_token = \"<NEW1>\"")) == [])
        let toml = "model = \"m\"\n"
            + concept("photo of a <cat> sleeping", "cat1", "modifier_token = \"<cat>\"")
            + concept("photo of a <Cat> jumping", "cat2", "modifier_token = \"<Cat>\"")
        #expect(fields(toml) == ["concept[1].modifier_token"])
    }
}
