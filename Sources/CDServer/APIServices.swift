import CDProtocol
import Foundation

/// What the daemon plugs into the API beyond the store: its admission rules for submitted jobs,
/// image sampling from checkpoints (numeric code the server does not link) and its own metrics.
public struct APIServices: Sendable {
    /// Checks and completes a submitted spec before it is validated and stored (model names,
    /// defaults, limits, the uploaded file names); throws a `JobFileError` (422) to refuse it.
    public var admit: @Sendable (_ spec: inout JobSpec, _ blobNames: Set<String>) throws -> Void
    /// PNG bytes for a sample request on the checkpoint folder of `job` (nil: 503). A thrown
    /// `JobFileError` (bad values) is a 422.
    public var sample: (@Sendable (_ job: Job, _ checkpointFolder: String, _ request: SampleRequest) async throws -> [UInt8])?
    /// The merged bundle of finished jobs (each with its folder in the state directory), in order
    /// (nil: 503). Thrown `JobFileError`s and merge errors are 422s.
    public var merge: (@Sendable (_ jobs: [(job: Job, folder: String)], _ request: MergeRequest) async throws -> [UInt8])?
    /// Prometheus text appended to `/metrics`.
    public var metrics: @Sendable () -> String
    /// The ranks training, reported by `/v1/health` (nil: no trainer attached).
    public var worldSize: Int?

    public init(
        admit: @escaping @Sendable (inout JobSpec, Set<String>) throws -> Void = { _, _ in },
        sample: (@Sendable (Job, String, SampleRequest) async throws -> [UInt8])? = nil,
        merge: (@Sendable ([(job: Job, folder: String)], MergeRequest) async throws -> [UInt8])? = nil,
        metrics: @escaping @Sendable () -> String = { "" }, worldSize: Int? = nil
    ) {
        self.admit = admit
        self.sample = sample
        self.merge = merge
        self.metrics = metrics
        self.worldSize = worldSize
    }
}
