@testable import CDProtocol
import Foundation
import Testing

/// The job file of the documentation.
let exampleJob = """
name = "cat-and-pot"
model = "models/sd15"            # diffusers folder or single-file safetensors (path), or a model name the daemon knows
seed = 42
steps = 250
batch_size = 2                   # instance images per optimizer step, global over all ranks
gradient_accumulation = 1
learning_rate = 1e-5
embedding_learning_rate = 1e-5   # optional, defaults to learning_rate
scale_lr = false
train = "crossattn_kv"           # "crossattn_kv" | "crossattn" | ["<diffusers key glob>", ...]
resolution = 512
checkpoint_every = 50
max_grad_norm = 1.0
prior_loss_weight = 1.0
augment = true                   # scale augmentation with caption words and loss mask
hflip = false
center_crop = false
outputs = ["diffusers", "a1111", "bundle"]

[[concept]]
instance_prompt = "photo of a <new1> cat"
instance_images = "data/cat"     # folder, or a list of files; relative paths are relative to the job file
class_prompt = "cat"
class_images = "reg/cat"         # optional folder; images may have a same-named .txt caption
num_class_images = 200           # generated with the base model if the folder holds fewer
modifier_token = "<new1>"
initializer_token = "ktn"

[validation]
prompts = ["<new1> cat wearing a hat"]
every = 50
steps = 25
guidance = 6.0
scheduler = "dpmpp-2m"
"""

/// A valid job with one concept, plus `extra` top-level keys (before the concept) and `concept`
/// lines inside the concept block.
func minimalJob(top extra: String = "", concept: String = "", tail: String = "") -> String {
    """
    model = "sd15"
    \(extra)

    [[concept]]
    instance_prompt = "photo of a <new1> cat"
    instance_images = "data/cat"
    class_prompt = "cat"
    modifier_token = "<new1>"
    \(concept)
    \(tail)
    """
}

/// The problems of parsing `toml` (empty when it parses).
func problems(_ toml: String, file: String = "job.toml") -> [JobFileError.Problem] {
    do {
        _ = try JobSpec.parse(toml: toml, file: file)
        return []
    } catch let e as JobFileError {
        return e.problems
    } catch {
        Issue.record("unexpected error type \(type(of: error)): \(error)")
        return []
    }
}

func fields(_ toml: String) -> [String] { problems(toml).map(\.field) }

/// A fresh temporary folder, removed after `body`.
func withTemporaryFolder<T>(_ body: (String) throws -> T) throws -> T {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("cdprotocol-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: url) }
    // Resolve /tmp links so expected paths compare equal.
    return try body(url.resolvingSymlinksInPath().path)
}

/// Creates empty files (and their folders) under `root`; a name ending in "/" makes a folder.
func makeFiles(_ root: String, _ names: [String]) throws {
    for n in names {
        let path = root + "/" + n
        if n.hasSuffix("/") {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } else {
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            #expect(FileManager.default.createFile(atPath: path, contents: Data()))
        }
    }
}

func write(_ text: String, to path: String) throws {
    try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
}
