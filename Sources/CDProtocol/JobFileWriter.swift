extension JobSpec {
    /// The spec as a job file with every key written out (defaults included), so that
    /// `parse(toml: spec.toTOML(), …) == spec` for a spec that `parse` returned. Concepts are
    /// written as `[[concept]]` blocks (a `concepts_list` is expanded); a concept's folder is written
    /// as its `instanceImageSource`, listed files as the list. `max_grad_norm = 0` means no clipping.
    public func toTOML() -> String {
        var out = ""
        func line(_ key: String, _ value: String) { out += "\(key) = \(value)\n" }
        line("name", TOMLText.string(name))
        line("model", TOMLText.string(model))
        line("seed", String(seed))
        line("steps", String(steps))
        line("batch_size", String(batchSize))
        line("gradient_accumulation", String(gradientAccumulation))
        line("learning_rate", TOMLText.number(learningRate))
        line("embedding_learning_rate", TOMLText.number(embeddingLearningRate))
        line("scale_lr", String(scaleLr))
        switch train {
        case let .patterns(p): line("train", TOMLText.strings(p))
        default: line("train", TOMLText.string(train.name ?? ""))
        }
        line("resolution", String(resolution))
        line("checkpoint_every", String(checkpointEvery))
        line("max_grad_norm", TOMLText.number(maxGradNorm ?? 0))
        line("prior_loss_weight", TOMLText.number(priorLossWeight))
        line("augment", String(augment))
        line("hflip", String(hflip))
        line("center_crop", String(centerCrop))
        line("outputs", TOMLText.strings(outputs.map(\.rawValue)))
        line("with_prior_preservation", String(withPriorPreservation))
        line("lr_schedule", TOMLText.string(lrSchedule.rawValue))
        line("lr_warmup_steps", String(lrWarmupSteps))
        line("adam_beta1", TOMLText.number(adamBeta1))
        line("adam_beta2", TOMLText.number(adamBeta2))
        line("adam_epsilon", TOMLText.number(adamEpsilon))
        line("adam_weight_decay", TOMLText.number(adamWeightDecay))
        line("detach_start_token", String(detachStartToken))
        line("latent_cache_views", String(latentCacheViews))
        if let computePrecision { line("compute_precision", TOMLText.string(computePrecision.rawValue)) }
        line("sample_seed", String(sampleSeed))
        for c in concepts {
            out += "\n[[concept]]\n"
            line("instance_prompt", TOMLText.string(c.instancePrompt))
            if c.instanceImageSource.isEmpty {
                line("instance_images", TOMLText.strings(c.instanceImages))
            } else {
                line("instance_images", TOMLText.string(c.instanceImageSource))
            }
            if let v = c.classPrompt { line("class_prompt", TOMLText.string(v)) }
            if let v = c.classImages { line("class_images", TOMLText.string(v)) }
            line("num_class_images", String(c.numClassImages))
            if let v = c.modifierToken { line("modifier_token", TOMLText.string(v)) }
            if let v = c.initializerToken { line("initializer_token", TOMLText.string(v)) }
        }
        if let v = validation {
            out += "\n[validation]\n"
            line("prompts", TOMLText.strings(v.prompts))
            line("negative_prompt", TOMLText.string(v.negativePrompt))
            line("every", String(v.every))
            line("steps", String(v.steps))
            line("guidance", TOMLText.number(v.guidance))
            line("scheduler", TOMLText.string(v.scheduler.rawValue))
            if v.scheduler == .ddim { line("eta", TOMLText.number(v.eta)) }
            line("count", String(v.count))
            line("width", String(v.width))
            line("height", String(v.height))
        }
        return out
    }
}

/// TOML literals.
enum TOMLText {
    /// A basic string with the escapes TOML requires.
    static func string(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if u.value < 0x20 || u.value == 0x7F {
                    let hex = String(u.value, radix: 16, uppercase: true)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }

    static func strings(_ list: [String]) -> String {
        "[" + list.map(string).joined(separator: ", ") + "]"
    }

    /// The shortest text that reads back as the same Double (always with a `.` or exponent).
    static func number(_ x: Double) -> String {
        if x.isNaN { return "nan" }
        if x.isInfinite { return x > 0 ? "inf" : "-inf" }
        let t = "\(x)"
        return t.contains(".") || t.contains("e") ? t : t + ".0"
    }
}
