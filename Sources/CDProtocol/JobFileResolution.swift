import Foundation

extension JobSpec {
    /// Reads, parses and checks the job file at `path`, then resolves its paths against the job
    /// file's folder and checks that the files exist (`resolvedFiles`). Every problem, of the text
    /// and of the files, comes in one `JobFileError`.
    public static func load(path: String) throws -> JobSpec {
        guard let data = FileManager.default.contents(atPath: path) else {
            var isFolder: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isFolder)
            let why = !exists ? "no such file" : isFolder.boolValue ? "is a folder, not a job file" : "cannot be read"
            throw JobFileError(file: path, problems: [.init(field: "", message: why)])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw JobFileError(file: path, problems: [.init(field: "", message: "is not UTF-8 text")])
        }
        let outcome = JobFileParser.parse(toml: text, file: path)
        guard let spec = outcome.spec else { throw JobFileError(file: path, problems: outcome.problems) }
        let (resolved, fileProblems) = spec.resolving(relativeTo: Paths.parent(path), paths: outcome.paths)
        let known = Set(outcome.problems.map(\.field))
        let problems = outcome.problems + fileProblems.filter { !known.contains($0.field) }
        if !problems.isEmpty { throw JobFileError(file: path, problems: problems) }
        return resolved
    }

    /// The spec with its paths absolute (relative ones taken inside `folder`): instance image folders
    /// expanded to their image files (.jpg .jpeg .png .webp in any case, hidden files skipped,
    /// sorted by path), listed files checked to exist and to be images, class image folders checked
    /// to exist (with prior preservation), and `model` made absolute when it names an existing path.
    /// `model` stays as written when it names no file and does not look like a path (starting with
    /// `/`, `./`, `../`, `~`, or ending in `.safetensors`/`.ckpt`): a model name for the daemon.
    /// Idempotent. Throws a `JobFileError` (file: `folder`) listing every missing file.
    public func resolvedFiles(relativeTo folder: String) throws -> JobSpec {
        let (resolved, problems) = resolving(relativeTo: folder, paths: ConceptPaths())
        if !problems.isEmpty { throw JobFileError(file: folder, problems: problems) }
        return resolved
    }

    /// The image files of a folder as `resolvedFiles` takes them: non-hidden regular files (or links
    /// to them) with an image extension, as absolute paths sorted by path. Throws a `JobFileError`
    /// (field "") when the folder cannot be listed.
    public static func imageFiles(in folder: String) throws -> [String] {
        let abs = Paths.absolute(folder, relativeTo: "")
        guard let files = listImages(abs) else {
            throw JobFileError(file: folder, problems: [.init(field: "", message: "cannot list the folder \(quoted(abs, limit: 200))")])
        }
        return files
    }

    static func isImageFile(_ name: String) -> Bool {
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return false }
        return JobDefaults.imageExtensions.contains(name[name.index(after: dot)...].lowercased())
    }

    /// nil when the folder cannot be listed.
    static func listImages(_ folder: String) -> [String]? {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return nil }
        return names.filter { !$0.hasPrefix(".") && isImageFile($0) }
            .map { Paths.join(folder, $0) }
            .filter { kind($0) == .file }
            .sorted()
    }

    enum PathKind { case missing, file, folder }

    static func kind(_ path: String) -> PathKind {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else { return .missing }
        return isFolder.boolValue ? .folder : .file
    }

    func resolving(relativeTo folder: String, paths: ConceptPaths) -> (JobSpec, [JobFileError.Problem]) {
        var p: [JobFileError.Problem] = []
        func add(_ field: String, _ message: String) { p.append(.init(field: field, message: message)) }
        var s = self
        let extensions = JobDefaults.imageExtensions.map { "." + $0 }.joined(separator: " ")

        if !model.isEmpty {
            let abs = Paths.absolute(model, relativeTo: folder)
            let looksLikePath = model.hasPrefix("/") || model.hasPrefix("./") || model.hasPrefix("../") || model.hasPrefix("~")
                || model.lowercased().hasSuffix(".safetensors") || model.lowercased().hasSuffix(".ckpt")
            if Self.kind(abs) != .missing {
                s.model = abs
            } else if looksLikePath {
                add("model", "no such file or folder \(quoted(abs, limit: 200))")
            }
        }

        for (i, c) in concepts.enumerated() {
            let field = paths.path(i, "instance_images")
            if !c.instanceImageSource.isEmpty {
                let abs = Paths.absolute(c.instanceImageSource, relativeTo: folder)
                switch Self.kind(abs) {
                case .missing:
                    add(field, "no such folder \(quoted(abs, limit: 200))")
                case .file:
                    add(field, "\(quoted(abs, limit: 200)) is a file, not a folder; list files as instance_images = [\"…\"]")
                case .folder:
                    if let files = Self.listImages(abs) {
                        if files.isEmpty { add(field, "the folder \(quoted(abs, limit: 200)) holds no images (\(extensions))") }
                        s.concepts[i].instanceImages = files
                    } else {
                        add(field, "cannot list the folder \(quoted(abs, limit: 200))")
                    }
                }
            } else {
                s.concepts[i].instanceImages = c.instanceImages.enumerated().map { k, f in
                    guard !f.isEmpty else { return f }
                    let abs = Paths.absolute(f, relativeTo: folder)
                    switch Self.kind(abs) {
                    case .missing: add("\(field)[\(k)]", "no such file \(quoted(abs, limit: 200))")
                    case .folder: add("\(field)[\(k)]", "\(quoted(abs, limit: 200)) is a folder; give a folder as instance_images = \"…\" (not in a list)")
                    case .file:
                        if !Self.isImageFile(abs) { add("\(field)[\(k)]", "\(quoted(abs, limit: 200)) is not an image file (\(extensions))") }
                    }
                    return abs
                }
            }
            if let classFolder = c.classImages, !classFolder.isEmpty {
                let abs = Paths.absolute(classFolder, relativeTo: folder)
                s.concepts[i].classImages = abs
                if withPriorPreservation {
                    let classField = paths.path(i, "class_images")
                    switch Self.kind(abs) {
                    case .missing:
                        add(classField, "no such folder \(quoted(abs, limit: 200)) (create it, even empty, to have the missing class images generated into it; or leave class_images out)")
                    case .file:
                        add(classField, "\(quoted(abs, limit: 200)) is a file, not a folder")
                    case .folder:
                        break
                    }
                }
            }
        }
        return (s, p)
    }
}
