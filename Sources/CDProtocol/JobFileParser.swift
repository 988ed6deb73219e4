import Foundation
import TOMLKit

extension JobSpec {
    /// Parses a job file's text: TOML syntax, the schema (unknown keys, types, required fields),
    /// values and their consistency. A `concepts_list` JSON file is read relative to the folder of
    /// `file`; no other file is touched (see `load` and `resolvedFiles`). Throws one `JobFileError`
    /// listing every problem.
    public static func parse(toml: String, file: String) throws -> JobSpec {
        let outcome = JobFileParser.parse(toml: toml, file: file)
        guard let spec = outcome.spec, outcome.problems.isEmpty else {
            throw JobFileError(file: file, problems: outcome.problems)
        }
        return spec
    }
}

/// Problems found so far, and the fields whose value could not be read (their value checks are skipped).
final class Diagnostics {
    var problems: [JobFileError.Problem] = []
    var failed: Set<String> = []

    func add(_ field: String, _ message: String) {
        problems.append(JobFileError.Problem(field: field, message: message))
    }

    /// A problem that also marks `field` as unreadable.
    func fail(_ field: String, _ message: String) {
        add(field, message)
        failed.insert(field)
    }

    func typeMismatch(_ field: String, expected: String, found: TOMLValueConvertible) {
        fail(field, "expected \(expected), found \(TableReader.describe(found))")
    }
}

/// Where a concept's fields are reported: `concept[i].field` for `[[concept]]` blocks; for
/// concepts from a `concepts_list` JSON file its own key names, and the top-level token keys.
struct ConceptPaths: Sendable {
    var fromList = false

    func path(_ i: Int, _ field: String) -> String {
        guard fromList else { return "concept[\(i)].\(field)" }
        switch field {
        case "modifier_token", "initializer_token", "num_class_images": return field
        case "instance_images": return "concepts_list[\(i)].instance_data_dir"
        case "class_images": return "concepts_list[\(i)].class_data_dir"
        default: return "concepts_list[\(i)].\(field)"
        }
    }

    func name(_ i: Int) -> String { fromList ? "concepts_list[\(i)]" : "concept[\(i)]" }

    /// Where "no concepts" is reported.
    var list: String { fromList ? "concepts_list" : "concept" }
}

/// Typed reads of one TOML table; every read marks its key known, type mismatches become problems.
struct TableReader {
    let table: TOMLTable
    /// Path of this table's keys: "", "concept[0].", "validation.".
    let prefix: String
    let diag: Diagnostics

    func path(_ key: String) -> String { prefix + key }

    func value(_ key: String) -> TOMLValueConvertible? { table[key] }

    func string(_ key: String) -> String? {
        guard let v = table[key] else { return nil }
        if let s = v.string { return s }
        diag.typeMismatch(path(key), expected: "a string", found: v)
        return nil
    }

    func int(_ key: String) -> Int? {
        guard let v = table[key] else { return nil }
        if let i = v.int { return i }
        diag.typeMismatch(path(key), expected: "an integer", found: v)
        return nil
    }

    /// Integers are accepted as numbers.
    func double(_ key: String) -> Double? {
        guard let v = table[key] else { return nil }
        if let x = v.double { return x }
        if let i = v.int { return Double(i) }
        diag.typeMismatch(path(key), expected: "a number", found: v)
        return nil
    }

    func bool(_ key: String) -> Bool? {
        guard let v = table[key] else { return nil }
        if let b = v.bool { return b }
        diag.typeMismatch(path(key), expected: "true or false", found: v)
        return nil
    }

    /// The string elements of an array (others reported at `key[i]` and skipped), or nil when absent
    /// or not an array.
    func stringList(_ key: String, expected: String = "a list of strings") -> [String]? {
        guard let v = table[key] else { return nil }
        guard let a = v.array else {
            diag.typeMismatch(path(key), expected: expected, found: v)
            return nil
        }
        return Self.strings(in: a, path: path(key), diag: diag)
    }

    static func strings(in a: TOMLArray, path: String, diag: Diagnostics) -> [String] {
        var out: [String] = []
        for i in 0..<a.count {
            let e = a[i]
            if let s = e.string { out.append(s) } else { diag.typeMismatch("\(path)[\(i)]", expected: "a string", found: e) }
        }
        return out
    }

    /// Reports every key of the table that is not in `known`, with a suggestion.
    func reportUnknown(known: [String], aliases: [String: String], advice: [String: String] = [:]) {
        let knownSet = Set(known)
        for key in table.keys.sorted() where !knownSet.contains(key) {
            if let a = advice[key] {
                diag.add(path(key), "unknown key; \(a)")
            } else {
                diag.add(path(key), "unknown key" + Suggestions.hint(key, in: known, aliases: aliases))
            }
        }
    }

    static func describe(_ v: TOMLValueConvertible) -> String {
        switch v.type {
        case .string: return "a string (\(quoted(v.string ?? "")))"
        case .int: return "an integer (\(v.int.map { String($0) } ?? "?"))"
        case .double: return "a number (\(v.double.map { "\($0)" } ?? "?"))"
        case .bool: return "a boolean (\(v.bool.map { "\($0)" } ?? "?"))"
        case .array: return "an array"
        case .table: return "a table"
        case .date: return "a date"
        case .time: return "a time"
        case .dateTime: return "a date-time"
        }
    }
}

/// A parse: the spec (with defaults where values were missing or unreadable; nil after a syntax
/// error), every problem, and where concept problems are reported.
struct ParseOutcome {
    var spec: JobSpec?
    var problems: [JobFileError.Problem]
    var paths: ConceptPaths
}

enum JobFileParser {
    static let topKeys = [
        "name", "model", "seed", "steps", "batch_size", "gradient_accumulation", "learning_rate",
        "embedding_learning_rate", "scale_lr", "train", "resolution", "checkpoint_every", "max_grad_norm",
        "prior_loss_weight", "augment", "hflip", "center_crop", "outputs", "with_prior_preservation",
        "lr_schedule", "lr_warmup_steps", "adam_beta1", "adam_beta2", "adam_epsilon", "adam_weight_decay",
        "detach_start_token", "latent_cache_views", "compute_precision", "sample_seed", "num_class_images", "concept",
        "concepts_list", "modifier_token", "initializer_token", "validation",
    ]
    static let conceptKeys = [
        "instance_prompt", "instance_images", "class_prompt", "class_images", "num_class_images",
        "modifier_token", "initializer_token",
    ]
    static let validationKeys = [
        "prompts", "negative_prompt", "every", "steps", "guidance", "scheduler", "eta", "count", "width", "height",
    ]
    /// diffusers' argument names (and other likely spellings) → ours.
    static let topAliases = [
        "pretrained_model_name_or_path": "model", "max_train_steps": "steps", "train_batch_size": "batch_size",
        "gradient_accumulation_steps": "gradient_accumulation", "freeze_model": "train",
        "checkpointing_steps": "checkpoint_every", "save_steps": "checkpoint_every", "lr_scheduler": "lr_schedule",
        "lr": "learning_rate", "noaug": "augment", "concepts": "concept", "real_prior": "with_prior_preservation",
        "adam_beta_1": "adam_beta1", "adam_beta_2": "adam_beta2", "weight_decay": "adam_weight_decay",
    ]
    static let topAdvice = [
        "instance_prompt": "it belongs in a [[concept]] block",
        "instance_images": "it belongs in a [[concept]] block",
        "instance_data_dir": "write instance_images in a [[concept]] block",
        "class_prompt": "it belongs in a [[concept]] block",
        "class_images": "it belongs in a [[concept]] block",
        "class_data_dir": "write class_images in a [[concept]] block",
        "validation_prompt": "write prompts = [\"…\"] in a [validation] table",
        "validation_prompts": "write prompts = [\"…\"] in a [validation] table",
        "validation_steps": "write every = N in a [validation] table",
        "num_validation_images": "write count = N in a [validation] table",
    ]
    static let conceptAliases = [
        "instance_data_dir": "instance_images", "class_data_dir": "class_images", "token": "modifier_token",
        "initializer": "initializer_token", "prompt": "instance_prompt",
    ]
    static let validationAliases = [
        "prompt": "prompts", "validation_prompt": "prompts", "num_inference_steps": "steps",
        "guidance_scale": "guidance", "cfg": "guidance", "sampler": "scheduler", "num_images": "count",
        "validation_steps": "every", "seed": "sample_seed (a top-level key)",
    ]

    static func parse(toml: String, file: String) -> ParseOutcome {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: toml)
        } catch let e as TOMLParseError {
            let p = JobFileError.Problem(field: "", message: "TOML syntax error: \(e.description)",
                                         line: e.source.begin.line, column: e.source.begin.column)
            return ParseOutcome(spec: nil, problems: [p], paths: ConceptPaths())
        } catch {
            return ParseOutcome(spec: nil, problems: [.init(field: "", message: "TOML syntax error: \(error)")], paths: ConceptPaths())
        }
        let d = Diagnostics()
        let r = TableReader(table: table, prefix: "", diag: d)
        r.reportUnknown(known: topKeys, aliases: topAliases, advice: topAdvice)

        var s = JobSpec(name: defaultName(file), model: "", concepts: [])
        if let v = r.string("name") { s.name = v }
        if let v = r.string("model") { s.model = v }
        if let v = readSeed(r, "seed") { s.seed = v }
        if let v = r.int("steps") { s.steps = v }
        if let v = r.int("batch_size") { s.batchSize = v }
        if let v = r.int("gradient_accumulation") { s.gradientAccumulation = v }
        if let v = r.double("learning_rate") { s.learningRate = v }
        let lrUsable = s.learningRate > 0 && s.learningRate.isFinite
        s.embeddingLearningRate = r.double("embedding_learning_rate") ?? (lrUsable ? s.learningRate : JobDefaults.learningRate)
        if let v = r.bool("scale_lr") { s.scaleLr = v }
        if let v = readTrain(r) { s.train = v }
        if let v = r.int("resolution") { s.resolution = v }
        if let v = r.int("checkpoint_every") { s.checkpointEvery = v }
        if let v = r.double("max_grad_norm") { s.maxGradNorm = v == 0 ? nil : v }
        if let v = r.double("prior_loss_weight") { s.priorLossWeight = v }
        if let v = r.bool("augment") { s.augment = v }
        if let v = r.bool("hflip") { s.hflip = v }
        if let v = r.bool("center_crop") { s.centerCrop = v }
        if let names = r.stringList("outputs", expected: "a list of output formats") {
            var outputs: [OutputFormat] = []
            for (i, n) in names.enumerated() {
                if let f = OutputFormat(rawValue: n) { outputs.append(f) } else {
                    let all = OutputFormat.allCases.map(\.rawValue)
                    d.fail("outputs[\(i)]", "unknown output format \(quoted(n)) (\(all.joined(separator: ", ")))" + Suggestions.hint(n, in: all))
                }
            }
            s.outputs = outputs
        }
        if let v = r.bool("with_prior_preservation") { s.withPriorPreservation = v }
        if let n = r.string("lr_schedule") {
            if let v = LRScheduleName(rawValue: n) { s.lrSchedule = v } else {
                let all = LRScheduleName.allCases.map(\.rawValue)
                d.fail("lr_schedule", "unknown schedule \(quoted(n)) (\(all.joined(separator: ", ")))" + Suggestions.hint(n, in: all))
            }
        }
        if let v = r.int("lr_warmup_steps") { s.lrWarmupSteps = v }
        if let v = r.double("adam_beta1") { s.adamBeta1 = v }
        if let v = r.double("adam_beta2") { s.adamBeta2 = v }
        if let v = r.double("adam_epsilon") { s.adamEpsilon = v }
        if let v = r.double("adam_weight_decay") { s.adamWeightDecay = v }
        if let v = r.bool("detach_start_token") { s.detachStartToken = v }
        if let v = r.int("latent_cache_views") { s.latentCacheViews = v }
        if let n = r.string("compute_precision") {
            if let v = ComputePrecisionName(rawValue: n) { s.computePrecision = v } else {
                let all = ComputePrecisionName.allCases.map(\.rawValue)
                d.fail("compute_precision", "unknown precision \(quoted(n)) (\(all.joined(separator: ", ")))" + Suggestions.hint(n, in: all))
            }
        }
        s.sampleSeed = readSeed(r, "sample_seed") ?? s.seed

        // Concepts: [[concept]] blocks or a concepts_list JSON file.
        var numClassImages = JobDefaults.numClassImages
        if let v = r.int("num_class_images") {
            if v < (s.withPriorPreservation ? 1 : 0) {
                d.add("num_class_images", "must be at least \(s.withPriorPreservation ? 1 : 0) (got \(v))")
            } else {
                numClassImages = v
            }
        }
        let topToken = r.string("modifier_token")
        let topInitializer = r.string("initializer_token")
        let listFile = r.string("concepts_list")
        var paths = ConceptPaths()
        if let blocks = r.value("concept") {
            if listFile != nil {
                d.fail("concepts_list", "give either [[concept]] blocks or concepts_list, not both")
            }
            for (key, value) in [("modifier_token", topToken), ("initializer_token", topInitializer)] where value != nil {
                d.fail(key, "a top-level \(key) ('+'-separated, assigned in order) goes with concepts_list; with [[concept]] blocks set \(key) in each block")
            }
            s.concepts = readConceptBlocks(blocks, numClassImages: numClassImages, diag: d)
        } else if let listFile {
            paths.fromList = true
            s.concepts = ConceptsList.read(listFile, jobFile: file, numClassImages: numClassImages, diag: d)
            ConceptsList.assignTokens(topToken, initializers: topInitializer, to: &s.concepts, diag: d)
        }
        fillDefaultInitializers(&s.concepts)

        if let v = r.value("validation") {
            if let t = v.table {
                s.validation = readValidation(t, spec: s, diag: d)
            } else {
                d.typeMismatch("validation", expected: "a table ([validation])", found: v)
            }
        }

        var seen = Set<String>()
        let problems = (d.problems + s.valueProblems(paths: paths).filter { !d.failed.contains($0.field) })
            .filter { seen.insert($0.description).inserted }
        return ParseOutcome(spec: s, problems: problems, paths: paths)
    }

    /// The job file's name without its extension ("job" when that is unusable as a name).
    static func defaultName(_ file: String) -> String {
        var n = Paths.lastComponent(file)
        if let dot = n.lastIndex(of: "."), dot != n.startIndex { n = String(n[..<dot]) }
        let bad = n.isEmpty || n.hasPrefix(".") || n.contains("\\")
            || n.unicodeScalars.contains { $0.properties.generalCategory == .control }
        return bad ? "job" : n
    }

    static func readSeed(_ r: TableReader, _ key: String) -> UInt64? {
        guard let v = r.int(key) else { return nil }
        guard v >= 0 else {
            r.diag.fail(key, "must be at least 0 (got \(v))")
            return nil
        }
        return UInt64(v)
    }

    static func readTrain(_ r: TableReader) -> TrainSelection? {
        guard let v = r.value("train") else { return nil }
        if let n = v.string {
            if let t = TrainSelection(name: n) { return t }
            r.diag.fail("train", "unknown selection \(quoted(n)): use \"crossattn_kv\", \"crossattn\" or a list of diffusers key patterns"
                + Suggestions.hint(n, in: TrainSelection.names))
            return nil
        }
        if let a = v.array { return .patterns(TableReader.strings(in: a, path: "train", diag: r.diag)) }
        r.diag.typeMismatch("train", expected: "\"crossattn_kv\", \"crossattn\" or a list of key patterns", found: v)
        return nil
    }

    static func readConceptBlocks(_ v: TOMLValueConvertible, numClassImages: Int, diag d: Diagnostics) -> [ConceptSpec] {
        if v.type == .table {
            d.fail("concept", "expected [[concept]] blocks (an array of tables), found a single [concept] table; write [[concept]]")
            return []
        }
        guard let a = v.array else {
            d.typeMismatch("concept", expected: "[[concept]] blocks (an array of tables)", found: v)
            return []
        }
        var concepts: [ConceptSpec] = []
        for i in 0..<a.count {
            let e = a[i]
            guard let t = e.table else {
                d.typeMismatch("concept[\(i)]", expected: "a table", found: e)
                continue
            }
            concepts.append(readConcept(t, index: i, numClassImages: numClassImages, diag: d))
        }
        return concepts
    }

    static func readConcept(_ t: TOMLTable, index i: Int, numClassImages: Int, diag d: Diagnostics) -> ConceptSpec {
        let r = TableReader(table: t, prefix: "concept[\(i)].", diag: d)
        r.reportUnknown(known: conceptKeys, aliases: conceptAliases)
        var c = ConceptSpec(instancePrompt: r.string("instance_prompt") ?? "", numClassImages: numClassImages)
        if let v = r.value("instance_images") {
            if let folder = v.string {
                c.instanceImageSource = folder
            } else if let a = v.array {
                c.instanceImages = TableReader.strings(in: a, path: r.path("instance_images"), diag: d)
            } else {
                d.typeMismatch(r.path("instance_images"), expected: "a folder (string) or a list of image files", found: v)
            }
        }
        c.classPrompt = r.string("class_prompt")
        c.classImages = r.string("class_images")
        if let v = r.int("num_class_images") { c.numClassImages = v }
        c.modifierToken = r.string("modifier_token")
        c.initializerToken = r.string("initializer_token")
        return c
    }

    /// Gives every token without an initializer the one another concept names for it, else the
    /// default of its position among the distinct tokens (ktn, pll, ucd); beyond three it stays nil.
    static func fillDefaultInitializers(_ concepts: inout [ConceptSpec]) {
        var order: [String] = []
        var named: [String: String] = [:]
        for c in concepts {
            guard let t = c.modifierToken else { continue }
            if !order.contains(t) { order.append(t) }
            if named[t] == nil, let i = c.initializerToken { named[t] = i }
        }
        for k in concepts.indices {
            guard let t = concepts[k].modifierToken, concepts[k].initializerToken == nil else { continue }
            if let i = named[t] {
                concepts[k].initializerToken = i
            } else if let position = order.firstIndex(of: t), position < JobDefaults.initializerTokens.count {
                concepts[k].initializerToken = JobDefaults.initializerTokens[position]
            }
        }
    }

    static func readValidation(_ t: TOMLTable, spec s: JobSpec, diag d: Diagnostics) -> ValidationSpec {
        let r = TableReader(table: t, prefix: "validation.", diag: d)
        r.reportUnknown(known: validationKeys, aliases: validationAliases)
        var v = ValidationSpec(prompts: r.stringList("prompts", expected: "a list of prompts (prompts = [\"…\"])") ?? [])
        if let x = r.string("negative_prompt") { v.negativePrompt = x }
        v.every = r.int("every") ?? (s.checkpointEvery >= 1 ? s.checkpointEvery : JobDefaults.checkpointEvery)
        if let x = r.int("steps") { v.steps = x }
        if let x = r.double("guidance") { v.guidance = x }
        var schedulerRead = true
        if let n = r.string("scheduler") {
            if let x = SchedulerName(rawValue: n) { v.scheduler = x } else {
                schedulerRead = false
                let all = SchedulerName.allCases.map(\.rawValue)
                d.fail("validation.scheduler", "unknown scheduler \(quoted(n)) (\(all.joined(separator: ", ")))" + Suggestions.hint(n, in: all))
            }
        } else if r.value("scheduler") != nil {
            schedulerRead = false
        }
        if let x = r.double("eta") {
            v.eta = x
            if schedulerRead && v.scheduler != .ddim {
                d.fail("validation.eta", "only scheduler = \"ddim\" uses eta (scheduler is \(quoted(v.scheduler.rawValue)))")
            }
        }
        if let x = r.int("count") { v.count = x }
        let resolutionUsable = s.resolution > 0 && s.resolution % 8 == 0
        v.width = r.int("width") ?? (resolutionUsable ? s.resolution : JobDefaults.resolution)
        v.height = r.int("height") ?? (resolutionUsable ? s.resolution : JobDefaults.resolution)
        return v
    }
}
