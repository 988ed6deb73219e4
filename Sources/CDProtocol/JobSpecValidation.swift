extension JobSpec {
    /// Checks the values of a spec built in code or decoded from JSON (what `parse` checks after
    /// reading the file). Throws a `JobFileError` for `file` listing every problem.
    public func validate(file: String = "job") throws {
        let problems = valueProblems(paths: ConceptPaths())
        if !problems.isEmpty { throw JobFileError(file: file, problems: problems) }
    }

    /// Every impossible or inconsistent value, with its field path.
    func valueProblems(paths: ConceptPaths) -> [JobFileError.Problem] {
        var p: [JobFileError.Problem] = []
        func add(_ field: String, _ message: String) { p.append(.init(field: field, message: message)) }
        func atLeast(_ field: String, _ value: Int, _ minimum: Int) {
            if value < minimum { add(field, "must be at least \(minimum) (got \(value))") }
        }
        func positive(_ field: String, _ value: Double) {
            if !(value > 0 && value.isFinite) { add(field, "must be a positive number (got \(value))") }
        }
        func nonNegative(_ field: String, _ value: Double) {
            if !(value >= 0 && value.isFinite) { add(field, "must be a number ≥ 0 (got \(value))") }
        }
        func multipleOf8(_ field: String, _ value: Int) {
            if value <= 0 || value % 8 != 0 { add(field, "must be a positive multiple of 8 (got \(value))") }
        }

        if name.isEmpty {
            add("name", "must not be empty")
        } else if name.contains("/") || name.contains("\\") || name.hasPrefix(".")
                    || name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            add("name", "is used in file names: no '/', '\\', control characters or leading '.' (got \(quoted(name)))")
        } else if name.utf8.count > 200 {
            add("name", "must be at most 200 bytes long")
        }
        if model.isEmpty {
            add("model", "required: a diffusers folder, a .safetensors checkpoint or a model name the daemon knows")
        }
        for (field, value) in [("seed", seed), ("sample_seed", sampleSeed)] where value > UInt64(Int64.max) {
            add(field, "must be at most \(Int64.max) (TOML integers are signed 64-bit)")
        }
        atLeast("steps", steps, 1)
        atLeast("batch_size", batchSize, 1)
        atLeast("gradient_accumulation", gradientAccumulation, 1)
        positive("learning_rate", learningRate)
        nonNegative("embedding_learning_rate", embeddingLearningRate)
        switch train {
        case let .patterns(list):
            if list.isEmpty { add("train", "list at least one diffusers key pattern") }
            for (i, s) in list.enumerated() where s.isEmpty { add("train[\(i)]", "empty pattern") }
        default: break
        }
        multipleOf8("resolution", resolution)
        atLeast("checkpoint_every", checkpointEvery, 1)
        if let m = maxGradNorm, !(m > 0 && m.isFinite) {
            add("max_grad_norm", "must be a positive number, or 0 for no clipping (got \(m))")
        }
        nonNegative("prior_loss_weight", priorLossWeight)
        if outputs.isEmpty { add("outputs", "list at least one output format (diffusers, a1111, bundle)") }
        var seenOutputs = Set<OutputFormat>()
        for o in outputs where !seenOutputs.insert(o).inserted { add("outputs", "\(quoted(o.rawValue)) is listed twice") }
        atLeast("lr_warmup_steps", lrWarmupSteps, 0)
        if lrWarmupSteps > 0 && lrSchedule == .constant {
            add("lr_warmup_steps", "has no effect with lr_schedule = \"constant\"; use \"constant_with_warmup\" or \"linear\"")
        } else if lrWarmupSteps > steps && steps >= 1 {
            add("lr_warmup_steps", "must not exceed steps (\(lrWarmupSteps) > \(steps))")
        }
        for (field, beta) in [("adam_beta1", adamBeta1), ("adam_beta2", adamBeta2)] where !(beta >= 0 && beta < 1) {
            add(field, "must be in [0, 1) (got \(beta))")
        }
        positive("adam_epsilon", adamEpsilon)
        nonNegative("adam_weight_decay", adamWeightDecay)
        atLeast("latent_cache_views", latentCacheViews, 0)

        if concepts.isEmpty {
            add(paths.list, "at least one concept is required ([[concept]] blocks, or concepts_list)")
        }
        for (i, c) in concepts.enumerated() {
            func at(_ field: String) -> String { paths.path(i, field) }
            if c.instancePrompt.isEmpty { add(at("instance_prompt"), "required: the caption of the instance images, e.g. \"photo of a <new1> cat\"") }
            if c.instanceImageSource.isEmpty && c.instanceImages.isEmpty {
                add(at("instance_images"), "required: a folder of images, or a list of image files")
            }
            var seenFiles = Set<String>()
            for (k, f) in c.instanceImages.enumerated() {
                if f.isEmpty { add("\(at("instance_images"))[\(k)]", "empty file name") }
                else if !seenFiles.insert(f).inserted { add("\(at("instance_images"))[\(k)]", "\(quoted(f)) is listed twice") }
            }
            if withPriorPreservation {
                if (c.classPrompt ?? "").isEmpty {
                    add(at("class_prompt"), "required with prior preservation (e.g. \"cat\"); or set with_prior_preservation = false")
                }
                atLeast(at("num_class_images"), c.numClassImages, 1)
            } else {
                atLeast(at("num_class_images"), c.numClassImages, 0)
            }
            if let f = c.classImages, f.isEmpty { add(at("class_images"), "empty folder name (leave class_images out to generate class images)") }
            if let t = c.modifierToken {
                if t.isEmpty {
                    add(at("modifier_token"), "must not be empty (leave modifier_token out to train no token)")
                } else if t.contains(where: \.isWhitespace) {
                    add(at("modifier_token"), "must not contain whitespace (got \(quoted(t)))")
                } else if t.contains("+") && !paths.fromList {
                    add(at("modifier_token"), "one token per concept; '+'-separated lists are for a top-level modifier_token with concepts_list")
                } else if !c.instancePrompt.isEmpty && !c.instancePrompt.lowercased().contains(t.lowercased()) {
                    add(at("modifier_token"), "\(quoted(t)) does not appear in the instance_prompt of \(paths.name(i)) (\(quoted(c.instancePrompt)))")
                }
                if let initializer = c.initializerToken {
                    if initializer.isEmpty || initializer.contains(where: \.isWhitespace) {
                        add(at("initializer_token"), "must be one existing token without whitespace (got \(quoted(initializer)))")
                    } else if initializer.lowercased() == t.lowercased() {
                        add(at("initializer_token"), "must differ from the modifier token \(quoted(t))")
                    }
                } else {
                    add(at("initializer_token"), "required for \(quoted(t)): defaults exist for the first \(JobDefaults.initializerTokens.count) distinct tokens only (\(JobDefaults.initializerTokens.joined(separator: ", ")))")
                }
            } else if c.initializerToken != nil {
                add(at("initializer_token"), "has no effect without modifier_token")
            }
        }
        // The tokenizer matches added tokens in lower-cased text: tokens that differ only in case collide.
        var spelling: [String: (index: Int, token: String)] = [:]
        for (i, c) in concepts.enumerated() {
            guard let t = c.modifierToken, !t.isEmpty else { continue }
            if let first = spelling[t.lowercased()] {
                if first.token != t {
                    add(paths.path(i, "modifier_token"), "\(quoted(t)) differs from \(quoted(first.token)) of \(paths.name(first.index)) only in case; prompts are lower-cased, so they would be one token")
                }
            } else {
                spelling[t.lowercased()] = (i, t)
            }
        }
        // A token shared by several concepts must have one initializer.
        var firstUse: [String: (index: Int, initializer: String)] = [:]
        for (i, c) in concepts.enumerated() {
            guard let t = c.modifierToken, let initializer = c.initializerToken else { continue }
            if let first = firstUse[t] {
                if first.initializer != initializer {
                    add(paths.path(i, "initializer_token"), "\(quoted(t)) is initialized from \(quoted(initializer)) here but from \(quoted(first.initializer)) in \(paths.name(first.index))")
                }
            } else {
                firstUse[t] = (i, initializer)
            }
        }

        if let v = validation {
            if v.prompts.isEmpty { add("validation.prompts", "list at least one prompt") }
            for (i, s) in v.prompts.enumerated() where s.isEmpty { add("validation.prompts[\(i)]", "empty prompt") }
            atLeast("validation.every", v.every, 1)
            if v.steps < 1 || v.steps > 1000 { add("validation.steps", "must be 1…1000 (got \(v.steps))") }
            nonNegative("validation.guidance", v.guidance)
            if !(v.eta >= 0 && v.eta <= 1) { add("validation.eta", "must be in [0, 1] (got \(v.eta))") }
            atLeast("validation.count", v.count, 1)
            multipleOf8("validation.width", v.width)
            multipleOf8("validation.height", v.height)
        }
        return p
    }
}
