import CDProtocol
import Foundation
@testable import CDServer

/// A fresh folder under the system temp folder, removed after `body`.
func withTemporaryDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let dir = FileManager.default.temporaryDirectory.path + "/cdserver-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    return try await body(dir)
}

/// A state directory in a fresh temp folder; closed and removed after `body`.
func withStateDirectory<T>(maxBlobSize: Int = BlobStore.defaultMaxBlobSize, _ body: (StateDirectory) async throws -> T) async throws -> T {
    try await withTemporaryDirectory { dir in
        let state = try StateDirectory(path: dir + "/state", maxBlobSize: maxBlobSize)
        defer { try? state.close() }
        return try await body(state)
    }
}

/// A small valid job.
func sampleSpec(_ name: String = "dog", steps: Int = 10) -> JobSpec {
    var spec = JobSpec(
        name: name, model: "tiny-sd",
        concepts: [ConceptSpec(instancePrompt: "photo of a <new1> dog", instanceImageSource: "images",
                               classPrompt: "dog", modifierToken: "<new1>", initializerToken: "ktn")])
    spec.steps = steps
    return spec
}

/// Submits a job without blobs and drives it into `state` along legal transitions.
func makeJob(_ store: JobStore, in state: JobState, name: String = "dog") throws -> Job {
    let job = try store.submit(spec: sampleSpec(name), blobs: [:], submissionID: nil).job
    switch state {
    case .queued: return job
    case .running: return try store.transition(job.id, to: .running)
    case .succeeded, .failed, .interrupted:
        try store.transition(job.id, to: .running)
        return try store.transition(job.id, to: state)
    case .cancelled: return try store.transition(job.id, to: .cancelled)
    }
}

/// Folder entries (names), sorted; [] when it does not exist.
func entries(_ path: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
}

/// Permission bits of a path.
func permissions(_ path: String) throws -> Int {
    let attrs = try FileManager.default.attributesOfItem(atPath: path)
    return (attrs[.posixPermissions] as? NSNumber)?.intValue ?? -1
}

/// Inode number of a path.
func inode(_ path: String) throws -> UInt64 {
    let attrs = try FileManager.default.attributesOfItem(atPath: path)
    return (attrs[.systemFileNumber] as? NSNumber)?.uint64Value ?? 0
}

