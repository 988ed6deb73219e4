@testable import CDProtocol
import Foundation
import Testing

@Suite("toTOML round trip")
struct RoundTripTests {
    @Test func exampleRoundTrips() throws {
        let job = try JobSpec.parse(toml: exampleJob, file: "cat-and-pot.toml")
        let text = job.toTOML()
        #expect(try JobSpec.parse(toml: text, file: "other-name.toml") == job)
        #expect(text.contains("name = \"cat-and-pot\"\n"))
        #expect(text.contains("learning_rate = 1e-05\n"))
        #expect(text.contains("[[concept]]\n"))
        #expect(text.contains("[validation]\n"))
        #expect(!text.contains("\neta = "))  // written for ddim only
    }

    @Test func everyKindOfValueRoundTrips() throws {
        var job = JobSpec(name: "weird \"name\" é 🐱", model: "C:\\models\\sd15 \"x\"", concepts: [
            ConceptSpec(instancePrompt: "photo of a <new1> cat\twith\nnewlines \u{01} and \u{7F}", instanceImages: ["a b.jpg", "ü/ç.png"],
                        classPrompt: "cat", classImages: "reg/cat", numClassImages: 3, modifierToken: "<new1>", initializerToken: "ktn"),
            ConceptSpec(instancePrompt: "a pot", instanceImageSource: "pots", classPrompt: "pot", numClassImages: 0 + 7),
        ])
        job.train = .patterns(["*attn2.to_k.weight", "up_blocks.?.attentions.*"])
        job.maxGradNorm = nil
        job.learningRate = 1.0 / 3.0
        job.embeddingLearningRate = 5e-3
        job.adamEpsilon = 1e-300
        job.priorLossWeight = 0
        job.seed = 9_223_372_036_854_775_807
        job.sampleSeed = 0
        job.lrSchedule = .constantWithWarmup
        job.lrWarmupSteps = 20
        job.outputs = [.a1111]
        job.computePrecision = .bf16
        var v = ValidationSpec(prompts: ["<new1> cat", "\"quoted\" \\ backslash"])
        v.scheduler = .ddim
        v.eta = 0.25
        v.negativePrompt = "ugly, blurry"
        v.guidance = 7.5
        v.width = 640
        v.height = 448
        job.validation = v
        try job.validate()
        let text = job.toTOML()
        #expect(try JobSpec.parse(toml: text, file: "j.toml") == job)
    }

    @Test func jobWithoutValidationOrTokensRoundTrips() throws {
        let job = try JobSpec.parse(toml: """
            model = "sd15"
            with_prior_preservation = false
            train = "crossattn"
            [[concept]]
            instance_prompt = "photo of a sks dog"
            instance_images = ["dog/1.jpg"]
            """, file: "dog.toml")
        #expect(try JobSpec.parse(toml: job.toTOML(), file: "x.toml") == job)
    }

    @Test func conceptsListIsWrittenAsConceptBlocks() throws {
        try withTemporaryFolder { root in
            try write(ConceptsListTests.twoConcepts, to: root + "/lists/c.json")
            let job = try JobSpec.parse(toml: "model = \"m\"\nconcepts_list = \"lists/c.json\"\nmodifier_token = \"<new1>+<new2>\"",
                                        file: root + "/job.toml")
            let text = job.toTOML()
            #expect(!text.contains("concepts_list"))
            #expect(try JobSpec.parse(toml: text, file: "job.toml") == job)
            #expect(job.concepts[0].instanceImageSource == "lists/data/cat")
        }
    }

    @Test func resolvedJobRoundTripsThroughLoad() throws {
        try withTemporaryFolder { root in
            try makeFiles(root, ["models/sd15/", "data/cat/1.jpg", "data/cat/2.jpg", "reg/cat/"])
            try write(exampleJob, to: root + "/a.toml")
            let loaded = try JobSpec.load(path: root + "/a.toml")
            try write(loaded.toTOML(), to: root + "/b.toml")
            #expect(try JobSpec.load(path: root + "/b.toml") == loaded)
        }
    }

    @Test func numbersAreWrittenAsTOMLFloats() {
        #expect(TOMLText.number(1) == "1.0")
        #expect(TOMLText.number(1e-5) == "1e-05")
        #expect(TOMLText.number(1e20) == "1e+20")
        #expect(TOMLText.string("a\"b\\c\n\u{0}") == "\"a\\\"b\\\\c\\n\\u0000\"")
    }
}
