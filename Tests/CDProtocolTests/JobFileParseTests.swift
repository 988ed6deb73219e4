@testable import CDProtocol
import Foundation
import Testing

@Suite("Job file parsing")
struct JobFileParseTests {
    @Test func exampleParsesToItsValues() throws {
        let job = try JobSpec.parse(toml: exampleJob, file: "jobs/cat-and-pot.toml")
        #expect(job.name == "cat-and-pot")
        #expect(job.model == "models/sd15")
        #expect(job.seed == 42)
        #expect(job.steps == 250)
        #expect(job.batchSize == 2)
        #expect(job.gradientAccumulation == 1)
        #expect(job.learningRate == 1e-5)
        #expect(job.embeddingLearningRate == 1e-5)
        #expect(job.scaleLr == false)
        #expect(job.train == .crossattnKV)
        #expect(job.resolution == 512)
        #expect(job.checkpointEvery == 50)
        #expect(job.maxGradNorm == 1.0)
        #expect(job.priorLossWeight == 1.0)
        #expect(job.augment && !job.hflip && !job.centerCrop)
        #expect(job.outputs == [.diffusers, .a1111, .bundle])
        #expect(job.withPriorPreservation)
        #expect(job.concepts == [ConceptSpec(
            instancePrompt: "photo of a <new1> cat", instanceImageSource: "data/cat", instanceImages: [],
            classPrompt: "cat", classImages: "reg/cat", numClassImages: 200,
            modifierToken: "<new1>", initializerToken: "ktn")])
        var validation = ValidationSpec(prompts: ["<new1> cat wearing a hat"])
        validation.every = 50
        validation.steps = 25
        validation.guidance = 6
        validation.scheduler = .dpmSolverPP2M
        validation.eta = 1
        validation.count = 1
        validation.width = 512
        validation.height = 512
        #expect(job.validation == validation)
        #expect(job.modifierTokens == [ModifierTokenSpec(token: "<new1>", initializerToken: "ktn")])
    }

    @Test func defaultsOfAMinimalJob() throws {
        let job = try JobSpec.parse(toml: """
            model = "sd15"
            [[concept]]
            instance_prompt = "photo of a <new1> cat"
            instance_images = "data/cat"
            class_prompt = "cat"
            modifier_token = "<new1>"
            """, file: "/jobs/my-cat.toml")
        #expect(job.name == "my-cat")
        #expect(job.seed == 42)
        #expect(job.steps == 250)
        #expect(job.batchSize == 2)
        #expect(job.gradientAccumulation == 1)
        #expect(job.learningRate == 1e-5)
        #expect(job.embeddingLearningRate == 1e-5)
        #expect(!job.scaleLr)
        #expect(job.train == .crossattnKV)
        #expect(job.resolution == 512)
        #expect(job.checkpointEvery == 250)
        #expect(job.maxGradNorm == 1.0)
        #expect(job.priorLossWeight == 1.0)
        #expect(job.augment && !job.hflip && !job.centerCrop)
        #expect(job.outputs == [.diffusers, .bundle])
        #expect(job.withPriorPreservation)
        #expect(job.lrSchedule == .constant)
        #expect(job.lrWarmupSteps == 0)
        #expect(job.adamBeta1 == 0.9 && job.adamBeta2 == 0.999 && job.adamEpsilon == 1e-8 && job.adamWeightDecay == 1e-2)
        #expect(job.detachStartToken)
        #expect(job.latentCacheViews == 8)
        #expect(job.sampleSeed == 42)
        #expect(job.validation == nil)
        let c = try #require(job.concepts.first)
        #expect(c.numClassImages == 200)
        #expect(c.classImages == nil)
        #expect(c.initializerToken == "ktn")
    }

    @Test func defaultsThatFollowOtherKeys() throws {
        let job = try JobSpec.parse(toml: minimalJob(
            top: "seed = 7\nlearning_rate = 3e-5\nresolution = 768\ncheckpoint_every = 100\nnum_class_images = 50",
            tail: "[validation]\nprompts = [\"<new1> cat\"]\nscheduler = \"ddim\""), file: "j.toml")
        #expect(job.sampleSeed == 7)
        #expect(job.embeddingLearningRate == 3e-5)
        #expect(job.concepts[0].numClassImages == 50)
        let v = try #require(job.validation)
        #expect(v.every == 100)
        #expect(v.width == 768 && v.height == 768)
        #expect(v.steps == 25 && v.guidance == 6 && v.eta == 1 && v.count == 1 && v.negativePrompt == "")
        #expect(v.scheduler == .ddim)
    }

    @Test func everyOptionalKeyIsRead() throws {
        let job = try JobSpec.parse(toml: minimalJob(top: """
            with_prior_preservation = true
            lr_schedule = "linear"
            lr_warmup_steps = 10
            adam_beta1 = 0.8
            adam_beta2 = 0.99
            adam_epsilon = 1e-6
            adam_weight_decay = 0
            detach_start_token = false
            latent_cache_views = 0
            compute_precision = "bf16"
            sample_seed = 1234
            scale_lr = true
            max_grad_norm = 0
            embedding_learning_rate = 0
            train = ["*attn2.to_k.weight", "up_blocks.3.*"]
            """, tail: """
            [validation]
            prompts = ["a", "b"]
            negative_prompt = "blurry"
            every = 10
            steps = 30
            guidance = 7
            scheduler = "ddim"
            eta = 0.0
            count = 4
            width = 640
            height = 384
            """), file: "j.toml")
        #expect(job.lrSchedule == .linear && job.lrWarmupSteps == 10)
        #expect(job.adamBeta1 == 0.8 && job.adamBeta2 == 0.99 && job.adamEpsilon == 1e-6 && job.adamWeightDecay == 0)
        #expect(!job.detachStartToken && job.latentCacheViews == 0 && job.sampleSeed == 1234 && job.scaleLr)
        #expect(job.computePrecision == .bf16)
        #expect(job.maxGradNorm == nil)
        #expect(job.embeddingLearningRate == 0)
        #expect(job.train == .patterns(["*attn2.to_k.weight", "up_blocks.3.*"]))
        let v = try #require(job.validation)
        #expect(v.prompts == ["a", "b"] && v.negativePrompt == "blurry" && v.every == 10 && v.steps == 30)
        #expect(v.guidance == 7 && v.eta == 0 && v.count == 4 && v.width == 640 && v.height == 384)
    }

    @Test func trainAcceptsBothNames() throws {
        let job = try JobSpec.parse(toml: minimalJob(top: "train = \"crossattn\""), file: "j.toml")
        #expect(job.train == .crossattn)
    }

    @Test func instanceImagesAsAListOfFiles() throws {
        let job = try JobSpec.parse(toml: """
            model = "sd15"
            with_prior_preservation = false
            [[concept]]
            instance_prompt = "photo of a sks dog"
            instance_images = ["dog/1.jpg", "dog/2.png"]
            """, file: "j.toml")
        #expect(job.concepts[0].instanceImageSource == "")
        #expect(job.concepts[0].instanceImages == ["dog/1.jpg", "dog/2.png"])
        #expect(job.concepts[0].modifierToken == nil)
        #expect(job.modifierTokens.isEmpty)
    }

    @Test func withoutPriorPreservationNoClassPromptIsNeeded() throws {
        let job = try JobSpec.parse(toml: """
            model = "sd15"
            with_prior_preservation = false
            [[concept]]
            instance_prompt = "photo of a <new1> cat"
            instance_images = "data/cat"
            modifier_token = "<new1>"
            """, file: "j.toml")
        #expect(!job.withPriorPreservation)
        #expect(job.concepts[0].classPrompt == nil)
    }

    @Test func jsonCodingUsesTheFileKeys() throws {
        let job = try JobSpec.parse(toml: exampleJob, file: "cat.toml")
        let data = try JSONEncoder().encode(job)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(object["batch_size"] as? Int == 2)
        #expect(object["train"] as? String == "crossattn_kv")
        #expect((object["concept"] as? [Any])?.count == 1)
        #expect(try JSONDecoder().decode(JobSpec.self, from: data) == job)
        var patterns = job
        patterns.train = .patterns(["*attn2*"])
        patterns.maxGradNorm = nil
        #expect(try JSONDecoder().decode(JobSpec.self, from: JSONEncoder().encode(patterns)) == patterns)
    }

    @Test func validateChecksASpecBuiltInCode() throws {
        var job = JobSpec(name: "x", model: "sd15", concepts: [
            ConceptSpec(instancePrompt: "a <t> dog", instanceImageSource: "dogs", classPrompt: "dog",
                        modifierToken: "<t>", initializerToken: "ktn"),
        ])
        try job.validate()
        job.steps = 0
        job.concepts[0].modifierToken = "<u>"
        #expect(throws: JobFileError.self) { try job.validate(file: "api") }
        do { try job.validate(file: "api") } catch let e as JobFileError {
            #expect(e.fields == ["steps", "concept[0].modifier_token"])
            #expect(e.file == "api")
        }
    }

    @Test func syntaxErrorsHaveLineAndColumn() throws {
        let p = problems("model = \"sd15\"\nsteps = \n[[concept]]\n", file: "bad.toml")
        #expect(p.count == 1)
        let first = try #require(p.first)
        #expect(first.field == "")
        #expect(first.line == 2)
        #expect(first.column != nil)
        #expect(first.message.contains("TOML syntax error"))
        let error = JobFileError(file: "bad.toml", problems: p)
        #expect(error.description.hasPrefix("bad.toml: line 2, column "))
    }

    @Test func duplicateKeysAreSyntaxErrors() {
        let p = problems("model = \"a\"\nmodel = \"b\"\n")
        #expect(p.count == 1 && p.first?.line == 2)
    }

    /// Every prefix of the example and assorted junk parse or fail with a JobFileError, never crash.
    @Test func badInputNeverCrashes() {
        let text = Array(exampleJob)
        for n in stride(from: 0, through: text.count, by: 7) {
            _ = problems(String(text[..<n]))
        }
        let junk = [
            "", "\0", "model = \"\0\"", "\"a\\u0000b\" = 1", "[[concept]]\n[[concept]]", "concept = 5", "concept = [1, \"x\"]",
            "validation = []", "[validation]\nprompts = [[1]]", "train = []", "train = [1]", "outputs = \"bundle\"",
            "steps = 9223372036854775807", "steps = -9223372036854775808", "learning_rate = nan", "learning_rate = -inf",
            "name = \"../../etc\"", "seed = 1979-05-27T07:32:00Z", "[[concept]]\ninstance_images = [\"\"]",
            "[[concept]]\nmodifier_token = \"\"", "concepts_list = \"/nonexistent/c.json\"", "concepts_list = \"\"",
            "model = \"m\"\n[validation]\nwidth = -8\nheight = 0", "🐱 = 1", "[a.b.c]\nd = 1",
        ]
        for j in junk { _ = problems(j) }
    }
}
