import CDModels
import CDProtocol
import CDTensor
import CDTraining
import Foundation

/// Images from a job's checkpoint for `POST /v1/jobs/{id}/samples`, and merges of finished jobs
/// for `POST /v1/merges`, on rank 0 beside training.
///
/// One request at a time on its own thread (generation is seconds to minutes of CPU; the HTTP
/// event loops must not wait on it). The base pipeline of the last model used stays loaded;
/// the checkpoint's concept (our bundle, exact; else its diffusers files) is applied for the
/// request and removed afterwards, so the base is never changed.
public final class CheckpointSampler: @unchecked Sendable {
    let config: DaemonConfig
    private let queue = DispatchQueue(label: "cdtrainerd.sampler", qos: .utility)
    /// Touched on `queue` only.
    private var loaded: (path: String, pipeline: StableDiffusionPipeline)?

    public init(config: DaemonConfig) { self.config = config }

    public func sample(job: Job, checkpointFolder: String, request: SampleRequest) async throws -> [UInt8] {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { try self.generate(job: job, folder: checkpointFolder, request: request) })
            }
        }
    }

    public func merge(jobs: [(job: Job, folder: String)], request: MergeRequest) async throws -> [UInt8] {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { try self.merged(jobs: jobs, request: request) })
            }
        }
    }

    /// The merged bundle of the jobs' final outputs (`run/NAME.concept.safetensors`), with the
    /// shipped caption set. Input problems become a `JobFileError` (422) naming the job.
    func merged(jobs: [(job: Job, folder: String)], request: MergeRequest) throws -> [UInt8] {
        func bad(_ field: String, _ message: String) -> JobFileError { JobFileError(file: "merge request", problems: [.init(field: field, message: message)]) }
        guard let first = jobs.first, let modelPath = config.modelPath(first.job.spec.model) else {
            throw bad("jobs", "the jobs' model is not in the daemon's [models]")
        }
        var inputs: [ConceptMerge.Input] = []
        for (i, entry) in jobs.enumerated() {
            let file = entry.folder + "/run/" + entry.job.spec.name + ".concept.safetensors"
            do {
                inputs.append(ConceptMerge.Input(concept: try ConceptFile.load(file), category: request.categories?[i]))
            } catch {
                throw bad("jobs[\(i)]", "job \(entry.job.id) has no final concept bundle: \(error)")
            }
        }
        let pipeline = try pipeline(for: modelPath)
        let concept: TrainedConcept
        do {
            concept = try ConceptMerge.merge(inputs, captions: try RegularizationCaptions.load(), pipeline: pipeline).0
        } catch let e as ConceptMergeError {
            throw bad("jobs", "\(e)")
        } catch let e as ConceptFormatError {
            throw bad("jobs", "\(e)")
        }
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("cdtrainerd-merge-\(UUID().uuidString).concept.safetensors")
        defer { try? FileManager.default.removeItem(at: tmp) }
        try ConceptBundle.write(concept, to: tmp)
        return Array(try Data(contentsOf: tmp))
    }

    /// The base pipeline of `modelPath`, loaded once and kept for the next request (on `queue`).
    private func pipeline(for modelPath: String) throws -> StableDiffusionPipeline {
        if let loaded, loaded.path == modelPath { return loaded.pipeline }
        loaded = nil  // free the old model before loading another
        let pipeline = try StableDiffusionPipeline.load(modelPath)
        loaded = (modelPath, pipeline)
        return pipeline
    }

    func generate(job: Job, folder: String, request body: SampleRequest) throws -> [UInt8] {
        func bad(_ field: String, _ message: String) -> JobFileError { JobFileError(file: "sample request", problems: [.init(field: field, message: message)]) }
        guard let modelPath = config.modelPath(job.spec.model) else { throw DaemonError.unknownModel(job.spec.model, known: config.models.keys.sorted()) }
        var r = StableDiffusionPipeline.Request(prompt: body.prompt)
        r.negativePrompt = body.negativePrompt ?? ""
        let scheduler = body.scheduler ?? config.sampleScheduler.rawValue
        guard let kind = SamplerKind(rawValue: scheduler) else {
            throw bad("scheduler", "unknown scheduler '\(scheduler)' (one of \(SamplerKind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        r.sampler = kind
        r.steps = body.steps ?? config.sampleSteps
        r.guidance = Float(body.guidance ?? config.sampleGuidance)
        r.seed = body.seed ?? job.spec.sampleSeed
        r.width = body.width ?? job.spec.resolution
        r.height = body.height ?? job.spec.resolution
        r.count = body.count ?? 1
        let strength = Float(body.strength ?? 1)
        guard !body.prompt.isEmpty else { throw bad("prompt", "must not be empty") }
        guard (1...1000).contains(r.steps) else { throw bad("steps", "must be 1…1000 (got \(r.steps))") }
        guard (1...8).contains(r.count) else { throw bad("count", "must be 1…8 (got \(r.count))") }
        guard r.guidance.isFinite, r.guidance >= 0 else { throw bad("guidance", "must be a number ≥ 0") }
        guard strength.isFinite else { throw bad("strength", "must be a finite number") }
        guard r.width <= 2048, r.height <= 2048 else { throw bad("width", "width and height must be at most 2048") }

        let pipeline = try pipeline(for: modelPath)
        if let problem = pipeline.validate(r) { throw bad("request", problem) }
        let applied = ConceptPipeline(pipeline)
        defer { applied.reset() }
        try applied.apply(try ConceptFile.load(Self.conceptFile(in: folder)), strength: strength)
        let images = pipeline.generate(r)
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("cdtrainerd-sample-\(UUID().uuidString).png").path
        defer { unlink(tmp) }
        try PNGImage.write(JobRunner.grid([images]), to: tmp)
        return Array(try Data(contentsOf: URL(fileURLWithPath: tmp)))
    }

    /// The checkpoint's bundle (`*.concept.safetensors`), else its `diffusers` folder.
    static func conceptFile(in folder: String) -> String {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        if let bundle = names.sorted().first(where: { $0.hasSuffix(".concept.safetensors") }) { return folder + "/" + bundle }
        return folder + "/diffusers"
    }
}
