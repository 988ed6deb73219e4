import Foundation

/// diffusers' `--concepts_list` JSON (spec 3): an array of objects with `instance_prompt`,
/// `class_prompt`, `instance_data_dir`, `class_data_dir` (CustomConcept101's `prompt_filename` is
/// accepted and ignored). Tokens come from the job's top-level `modifier_token = "<new1>+<new2>"` and
/// `initializer_token = "ktn+pll"`, assigned to the concepts in order.
enum ConceptsList {
    static let keys = ["instance_prompt", "class_prompt", "instance_data_dir", "class_data_dir", "prompt_filename"]
    static let aliases = ["instance_images": "instance_data_dir", "class_images": "class_data_dir"]

    /// The concepts of the JSON file `written` (relative to the job file's folder). Relative data
    /// folders in it are relative to the JSON file's folder; they are rewritten relative to the
    /// job file's folder, like every path of a job.
    static func read(_ written: String, jobFile: String, numClassImages: Int, diag d: Diagnostics) -> [ConceptSpec] {
        let path = Paths.absolute(written, relativeTo: Paths.parent(jobFile))
        guard let data = FileManager.default.contents(atPath: path) else {
            d.fail("concepts_list", "cannot read \(quoted(path, limit: 200))")
            return []
        }
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            let why = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? error.localizedDescription
            d.fail("concepts_list", "\(quoted(path, limit: 200)) is not valid JSON: \(why)")
            return []
        }
        guard let list = json as? [Any] else {
            d.fail("concepts_list", "expected a JSON array of concept objects, found \(kind(json))")
            return []
        }
        if list.isEmpty {
            d.fail("concepts_list", "\(quoted(path, limit: 200)) lists no concepts")
            return []
        }
        let jsonFolder = Paths.parent(written)
        var concepts: [ConceptSpec] = []
        for (i, element) in list.enumerated() {
            let at = "concepts_list[\(i)]"
            guard let object = element as? [String: Any] else {
                d.fail(at, "expected an object with instance_prompt, class_prompt, instance_data_dir, class_data_dir; found \(kind(element))")
                continue
            }
            for key in object.keys.sorted() where !keys.contains(key) {
                d.add("\(at).\(key)", "unknown key" + Suggestions.hint(key, in: keys, aliases: aliases))
            }
            func string(_ key: String) -> String? {
                guard let v = object[key] else { return nil }
                if let s = v as? String { return s }
                d.fail("\(at).\(key)", "expected a string, found \(kind(v))")
                return nil
            }
            var c = ConceptSpec(instancePrompt: string("instance_prompt") ?? "", numClassImages: numClassImages)
            c.instanceImageSource = string("instance_data_dir").map { rebase($0, onto: jsonFolder) } ?? ""
            c.classPrompt = string("class_prompt")
            c.classImages = string("class_data_dir").map { rebase($0, onto: jsonFolder) }
            _ = string("prompt_filename")
            concepts.append(c)
        }
        if concepts.isEmpty { d.failed.insert("concepts_list") }  // each element was reported
        return concepts
    }

    /// A path relative to the JSON file's folder made relative to the job file's folder.
    static func rebase(_ p: String, onto folder: String) -> String {
        if p.isEmpty || Paths.isAbsolute(p) || p == "~" || p.hasPrefix("~/") || folder.isEmpty || folder == "." { return p }
        return Paths.join(folder, p)
    }

    /// Splits the `+` lists and gives concept i token i (or every concept the single token).
    static func assignTokens(_ tokens: String?, initializers: String?, to concepts: inout [ConceptSpec], diag d: Diagnostics) {
        guard let tokens else {
            if initializers != nil { d.fail("initializer_token", "initializer_token needs modifier_token") }
            return
        }
        let list = split(tokens)
        if list.contains(where: \.isEmpty) {
            d.fail("modifier_token", "empty token in \(quoted(tokens)) ('+' separates tokens)")
            return
        }
        var seen = Set<String>()
        for t in list where !seen.insert(t).inserted {
            d.fail("modifier_token", "\(quoted(t)) is listed twice")
            return
        }
        var inits: [String]?
        if let initializers {
            let l = split(initializers)
            if l.contains(where: \.isEmpty) {
                d.fail("initializer_token", "empty token in \(quoted(initializers)) ('+' separates tokens)")
                return
            }
            if l.count < list.count {
                d.fail("initializer_token", "\(l.count) initializer token(s) for \(list.count) modifier tokens: give one per modifier token, in the same order")
                return
            }
            inits = l
        }
        guard !concepts.isEmpty else { return }
        guard list.count == concepts.count || list.count == 1 else {
            d.fail("modifier_token", "\(list.count) tokens for \(concepts.count) concepts: give one token per concept (assigned in order) or one token for all")
            return
        }
        for k in concepts.indices {
            let position = list.count == 1 ? 0 : k
            concepts[k].modifierToken = list[position]
            if let inits { concepts[k].initializerToken = inits[position] }
        }
    }

    static func split(_ s: String) -> [String] {
        s.split(separator: "+", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
    }

    static func kind(_ v: Any) -> String {
        switch v {
        case is NSNull: return "null"
        case is String: return "a string"
        case is [Any]: return "an array"
        case is [String: Any]: return "an object"
        default: return "a number or boolean"
        }
    }
}
