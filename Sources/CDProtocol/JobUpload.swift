import Foundation

/// How a job's local image files travel to the daemon: `cdctl` uploads each file as a blob under a
/// flat name (blob names carry no folders) and submits the spec rewritten to those names; the
/// daemon writes the blobs into the job's folder and points the spec back at them.
///
/// Names (each passes the blob store's file-name rules; zero-padded numbers keep the order in
/// which `run` reads the files, so the sample stream, and the trained weights, are the same):
///   `c{i}-{k:04}-{file}`           instance image k of concept i → `images/`
///   `c{i}-class-{k:04}-{file}`     class image k of concept i (and its `.txt` caption) → `class_images/concept-{i}/`
/// The submitted spec lists instance images by these names and names class folders
/// `class_images/concept-{i}` (relative to the job's folder on the daemon).
public enum JobUpload {
    /// The folder of the job's instance images, relative to its folder on the daemon.
    public static let instanceFolder = "images"

    /// Concept `i`'s class-image folder relative to the job's folder on the daemon.
    public static func classFolder(_ i: Int) -> String { "class_images/concept-\(i)" }

    /// One local file and the blob name it is uploaded as.
    public struct File: Sendable, Equatable {
        public var name: String
        public var path: String
        public init(name: String, path: String) {
            self.name = name
            self.path = path
        }
    }

    /// Client side: for a spec whose paths are resolved (`JobSpec.load`), the files to upload and
    /// the spec to submit. Class folders are listed as `run` lists them (images in name order, each
    /// with its `.txt` caption when present); an image-less class folder uploads nothing and the
    /// daemon generates the class images.
    public static func plan(_ spec: JobSpec, imageExtensions: Set<String> = Set(JobDefaults.imageExtensions)) throws -> (spec: JobSpec, files: [File]) {
        var out = spec, files: [File] = []
        for (i, c) in spec.concepts.enumerated() {
            var names: [String] = []
            for (k, path) in c.instanceImages.enumerated() {
                let name = String(format: "c%d-%04d-", i, k) + (path as NSString).lastPathComponent
                names.append(name)
                files.append(File(name: name, path: path))
            }
            out.concepts[i].instanceImages = names
            out.concepts[i].instanceImageSource = ""
            guard let folder = c.classImages else { continue }
            let entries = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
            let images = entries.filter { !$0.hasPrefix(".") && imageExtensions.contains(($0 as NSString).pathExtension.lowercased()) }
            for (k, image) in images.enumerated() {
                let stem = String(format: "c%d-class-%04d-", i, k) + (image as NSString).deletingPathExtension
                let path = (folder as NSString).appendingPathComponent(image)
                files.append(File(name: stem + "." + (image as NSString).pathExtension, path: path))
                let caption = (path as NSString).deletingPathExtension + ".txt"
                if FileManager.default.fileExists(atPath: caption) { files.append(File(name: stem + ".txt", path: caption)) }
            }
            out.concepts[i].classImages = classFolder(i)
        }
        return (out, files)
    }

    /// Where the daemon puts an uploaded file, relative to the job's folder: the folder, from the
    /// name's prefix (nil for a name that follows neither pattern).
    public static func folder(of name: String) -> String? {
        guard name.hasPrefix("c"), let dash = name.firstIndex(of: "-"),
              let i = Int(name[name.index(after: name.startIndex)..<dash]) else { return nil }
        let rest = name[name.index(after: dash)...]
        return rest.hasPrefix("class-") ? classFolder(i) : instanceFolder
    }

    /// Server side: problems of a submitted spec against its blob names (instance images that were
    /// not uploaded, class folders not of the `classFolder` form, names of no known folder).
    public static func problems(_ spec: JobSpec, blobNames: Set<String>) -> [JobFileError.Problem] {
        var p: [JobFileError.Problem] = []
        for name in blobNames.sorted() where folder(of: name) == nil {
            p.append(.init(field: "blobs", message: "'\(name)' does not name an instance (c<i>-<k>-file) or class (c<i>-class-<k>-file) image"))
        }
        for (i, c) in spec.concepts.enumerated() {
            for (k, name) in c.instanceImages.enumerated() where !blobNames.contains(name) {
                p.append(.init(field: "concept[\(i)].instance_images[\(k)]", message: "'\(name)' is not among the uploaded files (blobs)"))
            }
            if !c.instanceImageSource.isEmpty {
                p.append(.init(field: "concept[\(i)].instance_images", message: "a submitted job lists its uploaded images, not a folder"))
            }
            if let f = c.classImages, f != classFolder(i) {
                p.append(.init(field: "concept[\(i)].class_images", message: "must be '\(classFolder(i))' (the folder the uploaded class images go to) or absent"))
            }
        }
        return p
    }

    /// Server side: the spec with its names made absolute paths under `jobFolder`.
    public static func resolve(_ spec: JobSpec, jobFolder: String) -> JobSpec {
        var s = spec
        for (i, c) in spec.concepts.enumerated() {
            s.concepts[i].instanceImages = c.instanceImages.map { jobFolder + "/" + instanceFolder + "/" + $0 }
            if c.classImages != nil { s.concepts[i].classImages = jobFolder + "/" + classFolder(i) }
        }
        return s
    }
}
