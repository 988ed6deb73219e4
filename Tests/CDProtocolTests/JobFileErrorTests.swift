@testable import CDProtocol
import Foundation
import Testing

/// One bad job file and the field paths its problems must name, exactly.
struct BadJob: CustomTestStringConvertible, Sendable {
    let label: String
    let toml: String
    let fields: [String]
    var testDescription: String { label }

    init(_ label: String, _ toml: String, _ fields: [String]) {
        self.label = label
        self.toml = toml
        self.fields = fields
    }
}

@Suite("Job file errors")
struct JobFileErrorTests {
    static let unknownKeys: [BadJob] = [
        BadJob("top-level typo", minimalJob(top: "stpes = 10"), ["stpes"]),
        BadJob("diffusers argument name", minimalJob(top: "train_batch_size = 2"), ["train_batch_size"]),
        BadJob("concept key typo", minimalJob(concept: "num_class_image = 10"), ["concept[0].num_class_image"]),
        BadJob("validation key", minimalJob(tail: "[validation]\nprompts = [\"x\"]\nguidance_scale = 7"), ["validation.guidance_scale"]),
        BadJob("table name typo", minimalJob(tail: "[validaton]\nprompts = [\"x\"]"), ["validaton"]),
        BadJob("concept key at top level", minimalJob(top: "class_data_dir = \"reg\""), ["class_data_dir"]),
    ]

    @Test(arguments: unknownKeys)
    func unknownKeysAreNamed(_ job: BadJob) {
        #expect(fields(job.toml) == job.fields)
    }

    @Test func unknownKeysSuggestTheNearestKey() {
        #expect(problems(minimalJob(top: "stpes = 10")).first?.message.contains("did you mean 'steps'?") == true)
        #expect(problems(minimalJob(top: "train_batch_size = 2")).first?.message.contains("did you mean 'batch_size'?") == true)
        #expect(problems(minimalJob(top: "Learning-Rate = 1e-5")).first?.message.contains("did you mean 'learning_rate'?") == true)
        #expect(problems(minimalJob(concept: "num_class_image = 10")).first?.message.contains("'num_class_images'") == true)
        #expect(problems(minimalJob(tail: "[validaton]\nprompts = [\"x\"]")).first?.message.contains("'validation'") == true)
        #expect(problems(minimalJob(top: "class_data_dir = \"reg\"")).first?.message.contains("[[concept]]") == true)
        #expect(problems(minimalJob(top: "zzzzzzzz = 1")).first?.message == "unknown key")
    }

    static let wrongTypes: [BadJob] = [
        BadJob("steps as a string", minimalJob(top: "steps = \"250\""), ["steps"]),
        BadJob("resolution as a float", minimalJob(top: "resolution = 512.0"), ["resolution"]),
        BadJob("learning rate as a string", minimalJob(top: "learning_rate = \"1e-5\""), ["learning_rate"]),
        BadJob("bool as an integer", minimalJob(top: "augment = 1"), ["augment"]),
        BadJob("outputs as a string", minimalJob(top: "outputs = \"bundle\""), ["outputs"]),
        BadJob("train as a number", minimalJob(top: "train = 3"), ["train"]),
        BadJob("pattern not a string", minimalJob(top: "train = [\"*attn2*\", 4]"), ["train[1]"]),
        BadJob("model as a number", "model = 5\n" + minimalJob().replacingOccurrences(of: "model = \"sd15\"", with: ""), ["model"]),
        BadJob("instance_images as a number", minimalJob(concept: "").replacingOccurrences(of: "\"data/cat\"", with: "5"), ["concept[0].instance_images"]),
        BadJob("file list element", minimalJob().replacingOccurrences(of: "\"data/cat\"", with: "[\"a.jpg\", true]"), ["concept[0].instance_images[1]"]),
        BadJob("num_class_images as a float", minimalJob(concept: "num_class_images = 1.5"), ["concept[0].num_class_images"]),
        BadJob("validation prompts as a string", minimalJob(tail: "[validation]\nprompts = \"x\""), ["validation.prompts"]),
        BadJob("validation as a value", minimalJob(top: "validation = 5"), ["validation"]),
        BadJob("single [concept] table", "model = \"m\"\n[concept]\ninstance_prompt = \"x\"\ninstance_images = \"d\"\nclass_prompt = \"c\"", ["concept"]),
    ]

    @Test(arguments: wrongTypes)
    func wrongTypesAreNamed(_ job: BadJob) {
        #expect(fields(job.toml) == job.fields)
    }

    @Test func wrongTypeMessagesSayWhatWasFound() {
        #expect(problems(minimalJob(top: "steps = \"250\"")).first?.message == "expected an integer, found a string (\"250\")")
        #expect(problems(minimalJob(top: "augment = 1")).first?.message == "expected true or false, found an integer (1)")
    }

    static let missing: [BadJob] = [
        BadJob("model", minimalJob().replacingOccurrences(of: "model = \"sd15\"", with: ""), ["model"]),
        BadJob("instance_prompt", minimalJob().replacingOccurrences(of: "instance_prompt = \"photo of a <new1> cat\"", with: "")
                .replacingOccurrences(of: "modifier_token = \"<new1>\"", with: ""), ["concept[0].instance_prompt"]),
        BadJob("instance_images", minimalJob().replacingOccurrences(of: "instance_images = \"data/cat\"", with: ""), ["concept[0].instance_images"]),
        BadJob("empty file list", minimalJob().replacingOccurrences(of: "\"data/cat\"", with: "[]"), ["concept[0].instance_images"]),
        BadJob("every concept", "model = \"sd15\"", ["concept"]),
        BadJob("class_prompt with prior preservation", minimalJob().replacingOccurrences(of: "class_prompt = \"cat\"", with: ""), ["concept[0].class_prompt"]),
        BadJob("validation prompts", minimalJob(tail: "[validation]\nevery = 5"), ["validation.prompts"]),
    ]

    @Test(arguments: missing)
    func missingRequiredFieldsAreNamed(_ job: BadJob) {
        #expect(fields(job.toml) == job.fields)
    }

    static let impossible: [BadJob] = [
        BadJob("steps 0", minimalJob(top: "steps = 0"), ["steps"]),
        BadJob("steps negative", minimalJob(top: "steps = -5"), ["steps"]),
        BadJob("resolution not a multiple of 8", minimalJob(top: "resolution = 500"), ["resolution"]),
        BadJob("resolution 0", minimalJob(top: "resolution = 0"), ["resolution"]),
        BadJob("batch_size 0", minimalJob(top: "batch_size = 0"), ["batch_size"]),
        BadJob("gradient_accumulation 0", minimalJob(top: "gradient_accumulation = 0"), ["gradient_accumulation"]),
        BadJob("learning rate 0", minimalJob(top: "learning_rate = 0"), ["learning_rate"]),
        BadJob("learning rate negative", minimalJob(top: "learning_rate = -1e-5"), ["learning_rate"]),
        BadJob("learning rate nan", minimalJob(top: "learning_rate = nan"), ["learning_rate"]),
        BadJob("learning rate inf", minimalJob(top: "learning_rate = inf"), ["learning_rate"]),
        BadJob("embedding learning rate negative", minimalJob(top: "embedding_learning_rate = -1.0"), ["embedding_learning_rate"]),
        BadJob("prior_loss_weight negative", minimalJob(top: "prior_loss_weight = -1"), ["prior_loss_weight"]),
        BadJob("max_grad_norm negative", minimalJob(top: "max_grad_norm = -1"), ["max_grad_norm"]),
        BadJob("checkpoint_every 0", minimalJob(top: "checkpoint_every = 0"), ["checkpoint_every"]),
        BadJob("seed negative", minimalJob(top: "seed = -1"), ["seed"]),
        BadJob("sample_seed negative", minimalJob(top: "sample_seed = -1"), ["sample_seed"]),
        BadJob("latent_cache_views negative", minimalJob(top: "latent_cache_views = -1"), ["latent_cache_views"]),
        BadJob("unknown compute_precision", minimalJob(top: "compute_precision = \"fp16\""), ["compute_precision"]),
        BadJob("adam_beta1 1", minimalJob(top: "adam_beta1 = 1.0"), ["adam_beta1"]),
        BadJob("adam_beta2 negative", minimalJob(top: "adam_beta2 = -0.1"), ["adam_beta2"]),
        BadJob("adam_epsilon 0", minimalJob(top: "adam_epsilon = 0"), ["adam_epsilon"]),
        BadJob("adam_weight_decay negative", minimalJob(top: "adam_weight_decay = -0.01"), ["adam_weight_decay"]),
        BadJob("unknown train name", minimalJob(top: "train = \"crossattn-kv\""), ["train"]),
        BadJob("empty pattern list", minimalJob(top: "train = []"), ["train"]),
        BadJob("unknown output", minimalJob(top: "outputs = [\"diffusers\", \"a111\"]"), ["outputs[1]"]),
        BadJob("no outputs", minimalJob(top: "outputs = []"), ["outputs"]),
        BadJob("output twice", minimalJob(top: "outputs = [\"bundle\", \"bundle\"]"), ["outputs"]),
        BadJob("unknown lr_schedule", minimalJob(top: "lr_schedule = \"cosine\""), ["lr_schedule"]),
        BadJob("warm-up with constant", minimalJob(top: "lr_warmup_steps = 10"), ["lr_warmup_steps"]),
        BadJob("warm-up longer than training", minimalJob(top: "lr_schedule = \"linear\"\nlr_warmup_steps = 300"), ["lr_warmup_steps"]),
        BadJob("warm-up negative", minimalJob(top: "lr_schedule = \"linear\"\nlr_warmup_steps = -1"), ["lr_warmup_steps"]),
        BadJob("num_class_images 0 with prior", minimalJob(concept: "num_class_images = 0"), ["concept[0].num_class_images"]),
        BadJob("top-level num_class_images 0", minimalJob(top: "num_class_images = 0"), ["num_class_images"]),
        BadJob("name with a slash", minimalJob(top: "name = \"a/b\""), ["name"]),
        BadJob("empty model", minimalJob().replacingOccurrences(of: "\"sd15\"", with: "\"\""), ["model"]),
        BadJob("unknown scheduler", minimalJob(tail: "[validation]\nprompts = [\"x\"]\nscheduler = \"dpm++2m\""), ["validation.scheduler"]),
        BadJob("validation every 0", minimalJob(tail: "[validation]\nprompts = [\"x\"]\nevery = 0"), ["validation.every"]),
        BadJob("validation steps 0", minimalJob(tail: "[validation]\nprompts = [\"x\"]\nsteps = 0"), ["validation.steps"]),
        BadJob("validation steps 5000", minimalJob(tail: "[validation]\nprompts = [\"x\"]\nsteps = 5000"), ["validation.steps"]),
        BadJob("validation guidance nan", minimalJob(tail: "[validation]\nprompts = [\"x\"]\nguidance = nan"), ["validation.guidance"]),
        BadJob("validation count 0", minimalJob(tail: "[validation]\nprompts = [\"x\"]\ncount = 0"), ["validation.count"]),
        BadJob("validation size", minimalJob(tail: "[validation]\nprompts = [\"x\"]\nwidth = 100\nheight = -8"), ["validation.width", "validation.height"]),
        BadJob("eta with another scheduler", minimalJob(tail: "[validation]\nprompts = [\"x\"]\neta = 0.5"), ["validation.eta"]),
        BadJob("eta above 1", minimalJob(tail: "[validation]\nprompts = [\"x\"]\nscheduler = \"ddim\"\neta = 1.5"), ["validation.eta"]),
        BadJob("empty validation prompt", minimalJob(tail: "[validation]\nprompts = [\"x\", \"\"]"), ["validation.prompts[1]"]),
    ]

    @Test(arguments: impossible)
    func impossibleValuesAreNamed(_ job: BadJob) {
        #expect(fields(job.toml) == job.fields)
    }

    @Test func unknownNamesSuggestTheNearestName() {
        #expect(problems(minimalJob(top: "train = \"crossattn-kv\"")).first?.message.contains("did you mean 'crossattn_kv'?") == true)
        #expect(problems(minimalJob(top: "outputs = [\"a111\"]")).first?.message.contains("did you mean 'a1111'?") == true)
        #expect(problems(minimalJob(tail: "[validation]\nprompts = [\"x\"]\nscheduler = \"dpm++2m\"")).first?.message.contains("did you mean 'dpmpp-2m'?") == true)
    }

    static let tokens: [BadJob] = [
        BadJob("token not in the instance prompt", minimalJob().replacingOccurrences(of: "modifier_token = \"<new1>\"", with: "modifier_token = \"<new2>\""),
               ["concept[0].modifier_token"]),
        BadJob("token with whitespace", minimalJob().replacingOccurrences(of: "modifier_token = \"<new1>\"", with: "modifier_token = \"<new 1>\""),
               ["concept[0].modifier_token"]),
        BadJob("empty token", minimalJob().replacingOccurrences(of: "modifier_token = \"<new1>\"", with: "modifier_token = \"\""),
               ["concept[0].modifier_token"]),
        BadJob("'+' list in a concept", minimalJob().replacingOccurrences(of: "modifier_token = \"<new1>\"", with: "modifier_token = \"<new1>+<new2>\""),
               ["concept[0].modifier_token"]),
        BadJob("initializer with whitespace", minimalJob(concept: "initializer_token = \"k t n\""), ["concept[0].initializer_token"]),
        BadJob("initializer equal to the token", minimalJob(concept: "initializer_token = \"<new1>\""), ["concept[0].initializer_token"]),
        BadJob("initializer without token", minimalJob().replacingOccurrences(of: "modifier_token = \"<new1>\"", with: "initializer_token = \"ktn\""),
               ["concept[0].initializer_token"]),
        BadJob("top-level token with [[concept]] blocks", minimalJob(top: "modifier_token = \"<new1>\""), ["modifier_token"]),
        BadJob("shared token, different initializers", """
            model = "m"
            [[concept]]
            instance_prompt = "photo of a <new1> cat"
            instance_images = "cat"
            class_prompt = "cat"
            modifier_token = "<new1>"
            initializer_token = "ktn"
            [[concept]]
            instance_prompt = "<new1> cat on a sofa"
            instance_images = "cat2"
            class_prompt = "cat"
            modifier_token = "<new1>"
            initializer_token = "pll"
            """, ["concept[1].initializer_token"]),
    ]

    @Test(arguments: tokens)
    func tokenProblemsAreNamed(_ job: BadJob) {
        #expect(fields(job.toml) == job.fields)
    }

    @Test func tokensInValidationPromptsAreNotChecked() {
        #expect(fields(minimalJob(tail: "[validation]\nprompts = [\"a cat in a hat\"]")) == [])
    }

    @Test func conceptBlocksAndConceptsListTogether() {
        #expect(fields(minimalJob(top: "concepts_list = \"c.json\"")) == ["concepts_list"])
    }

    @Test func everyProblemIsListedAtOnce() throws {
        let toml = """
            steps = 0
            learning_rate = "fast"
            batchsize = 4
            resolution = 100
            train = "all"

            [[concept]]
            instance_prompt = "photo of a <new1> cat"
            instance_images = "cat"
            modifier_token = "<new2>"

            [[concept]]
            instance_images = ["a.jpg", "a.jpg"]
            class_prompt = "pot"

            [validation]
            prompts = []
            every = 0
            scheduler = "plms"
            """
        let p = problems(toml, file: "jobs/bad.toml")
        #expect(Set(p.map(\.field)) == [
            "batchsize", "model", "steps", "learning_rate", "resolution", "train",
            "concept[0].class_prompt", "concept[0].modifier_token",
            "concept[1].instance_prompt", "concept[1].instance_images[1]",
            "validation.prompts", "validation.every", "validation.scheduler",
        ])
        #expect(p.count == 13)
        let description = JobFileError(file: "jobs/bad.toml", problems: p).description
        let lines = description.split(separator: "\n")
        #expect(lines.count == p.count)
        #expect(lines.allSatisfy { $0.hasPrefix("jobs/bad.toml: ") })
        #expect(lines.contains("jobs/bad.toml: batchsize: unknown key; did you mean 'batch_size'?"))
        #expect(lines.contains("jobs/bad.toml: steps: must be at least 1 (got 0)"))
    }

    @Test func parseThrowsOneJobFileErrorNamingTheFile() {
        #expect(throws: JobFileError.self) { try JobSpec.parse(toml: "steps = 0", file: "x.toml") }
        do {
            _ = try JobSpec.parse(toml: "steps = 0", file: "x.toml")
        } catch let e as JobFileError {
            #expect(e.file == "x.toml")
            #expect(e.fields == ["model", "steps", "concept"])
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}
