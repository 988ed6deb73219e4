import CDClient
import CDProtocol
import CDServer
import Foundation
import Hummingbird
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let apiToken = "client-test-token-0123456789"

/// A fresh folder under the system temp folder, removed after `body`.
func withTemporaryDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let dir = FileManager.default.temporaryDirectory.path + "/cdclient-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    return try await body(dir)
}

/// A state directory in `dir`/state; closed after `body`.
func withState<T>(in dir: String, _ body: (StateDirectory) async throws -> T) async throws -> T {
    let state = try StateDirectory(path: dir + "/state")
    defer { try? state.close() }
    return try await body(state)
}

/// The real API server over `state` on 127.0.0.1:`port` (0: a free one) while `body` runs; `body`
/// gets the server's URL.
func withLiveServer<T: Sendable>(
    _ state: StateDirectory, port: Int = 0, token: String? = apiToken, _ body: @escaping @Sendable (URL) async throws -> T
) async throws -> T {
    let (ports, sink) = AsyncStream.makeStream(of: Int.self)
    let app = try APIServer.application(state: state, config: ServerConfig(port: port, token: token), onServerRunning: { channel in
        sink.yield(channel.localAddress?.port ?? -1)
        sink.finish()
    })
    return try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask {
            try await app.runService()
            return nil
        }
        var it = ports.makeAsyncIterator()
        let bound = try #require(await it.next())
        let result = try await body(URL(string: "http://127.0.0.1:\(bound)")!)
        group.cancelAll()
        return result
    }
}

/// A temp folder with a state directory and a live server; `body` gets the folder, the state and a client with the token.
func withClient<T: Sendable>(_ body: @escaping @Sendable (String, StateDirectory, APIClient) async throws -> T) async throws -> T {
    try await withTemporaryDirectory { dir in
        try await withState(in: dir) { state in
            try await withLiveServer(state) { url in
                try await body(dir, state, APIClient(server: url, token: apiToken, retry: .none))
            }
        }
    }
}

/// A TCP port nothing listens on right now (bound to 0 and released).
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #expect(fd >= 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    #expect(bound)
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// A small valid job spec naming one uploaded instance image, `c0-0000-x.png`.
func sampleSpec(_ name: String = "toy", steps: Int = 10) -> JobSpec {
    var spec = JobSpec(
        name: name, model: "tiny-sd",
        concepts: [ConceptSpec(instancePrompt: "photo of a <new1> toy", instanceImages: ["c0-0000-x.png"], classPrompt: "toy",
                               modifierToken: "<new1>", initializerToken: "ktn")])
    spec.steps = steps
    spec.resolution = 64
    return spec
}

/// Submits a job without blobs and drives it into `state` along legal transitions.
@discardableResult
func makeJob(_ store: JobStore, in state: JobState, name: String = "toy") throws -> Job {
    let job = try store.submit(spec: sampleSpec(name), blobs: [:], submissionID: nil).job
    switch state {
    case .queued: return job
    case .running: return try store.transition(job.id, to: .running)
    case .succeeded, .failed, .interrupted:
        try store.transition(job.id, to: .running)
        return try store.transition(job.id, to: state, error: state == .failed ? "the loss is NaN" : nil)
    case .cancelled: return try store.transition(job.id, to: .cancelled)
    }
}

/// The repository's root (from this file's path).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// Small real images from the fixtures: two different PNGs and a JPEG.
enum FixtureImages {
    static var pngA: String { repositoryRoot + "/Tests/Fixtures/tiny-sd1/cases/vae_input.png" }
    static var pngB: String { repositoryRoot + "/Tests/Fixtures/tiny-sd1-alt/cases/vae_input.png" }
    static var jpeg: String { repositoryRoot + "/Tests/CDImagesTests/Fixtures/exif1.jpg" }
}

/// A job file in `dir`/job with three instance images (two of them with equal content) and one
/// class image with its caption; returns the job file's path.
func writeJobFolder(in dir: String, steps: Int = 10) throws -> String {
    let job = dir + "/job"
    let fm = FileManager.default
    try fm.createDirectory(atPath: job + "/images", withIntermediateDirectories: true)
    try fm.createDirectory(atPath: job + "/class", withIntermediateDirectories: true)
    try fm.copyItem(atPath: FixtureImages.pngA, toPath: job + "/images/a.png")
    try fm.copyItem(atPath: FixtureImages.pngB, toPath: job + "/images/b.png")
    try fm.copyItem(atPath: FixtureImages.pngA, toPath: job + "/images/c-same-as-a.png")
    try fm.copyItem(atPath: FixtureImages.jpeg, toPath: job + "/class/toy0.jpg")
    try Data("a toy on a table".utf8).write(to: URL(fileURLWithPath: job + "/class/toy0.txt"))
    let toml = """
        name = "toy"
        model = "tiny-sd"
        steps = \(steps)
        resolution = 64
        checkpoint_every = 5

        [[concept]]
        instance_prompt = "photo of a <new1> toy"
        instance_images = "images"
        class_prompt = "toy"
        class_images = "class"
        num_class_images = 2
        modifier_token = "<new1>"
        """
    try Data(toml.utf8).write(to: URL(fileURLWithPath: job + "/job.toml"))
    return job + "/job.toml"
}

/// Waits (polling) until the store holds a queued job and makes it `running`.
func claimSubmittedJob(_ store: JobStore, timeout: Duration = .seconds(60)) async throws -> Job {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if let job = try store.claimNextQueued() { return job }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw TestFailure("no job was submitted within \(timeout)")
}

/// Plays a short training run on a running job: progress for every step, a checkpoint at the
/// middle, then `end` (with an error when failed).
func playTraining(_ store: JobStore, _ id: String, steps: Int, end: JobState, pause: Duration = .milliseconds(20)) async throws {
    for step in 1...steps {
        try store.recordProgress(id, step: step, loss: 1.0 / Double(step), learningRate: 1e-5, stepSeconds: 0.5)
        if step == steps / 2 { try store.recordCheckpoint(id, step: step, path: "checkpoints/step-\(step)") }
        try await Task.sleep(for: pause)
    }
    try store.transition(id, to: end, error: end == .failed ? "the loss is NaN at step \(steps)" : nil)
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Counts calls from any thread.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func increment() { lock.withLock { n += 1 } }
    var value: Int { lock.withLock { n } }
}

/// The files of a checkpoint folder as `JobRunner` writes them.
enum CheckpointFixture {
    static let files = [
        "state.safetensors",
        "diffusers/pytorch_custom_diffusion_weights.safetensors",
        "diffusers/<new1>.safetensors",
        "a1111/toy.delta.safetensors",
        "a1111/<new1>.safetensors",
        "toy.concept.safetensors",
    ]

    static func content(step: Int, file: String) -> String { "step \(step): \(file)" }
}

/// A running job with checkpoints at steps 5 and 10, each holding every output format and the
/// training state (contents name the step and the file).
func jobWithCheckpoints(_ state: StateDirectory) throws -> Job {
    let job = try makeJob(state.jobs, in: .running)
    let jobDir = try state.createJobDirectory(job.id)
    for step in [5, 10] {
        let dir = jobDir + "/checkpoints/step-\(step)"
        for file in CheckpointFixture.files {
            let path = dir + "/" + file
            try FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(CheckpointFixture.content(step: step, file: file).utf8).write(to: URL(fileURLWithPath: path))
        }
        try state.jobs.recordCheckpoint(job.id, step: step, path: "checkpoints/step-\(step)")
    }
    return job
}
