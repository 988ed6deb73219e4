import CDProtocol
import CDTensor
import Foundation

/// The daemon's rules for a submitted job (before the spec's own validation): the model must be
/// one it knows (stored by its `[models]` name), the steps within its limit, the images those uploaded (`JobUpload` names),
/// bf16 compute only on a CPU that has it, and every output format is written so any can be downloaded later.
public struct JobAdmission: Sendable {
    public let config: DaemonConfig

    public init(config: DaemonConfig) { self.config = config }

    public func admit(_ spec: inout JobSpec, blobNames: Set<String>) throws {
        var problems: [JobFileError.Problem] = []
        if spec.model.isEmpty { spec.model = config.defaultModel }
        if spec.model.isEmpty {
            problems.append(.init(field: "model", message: "required (this daemon has no default model; it knows \(known))"))
        } else if let name = config.modelName(spec.model) {
            spec.model = name  // one spelling per model: merges compare them
        } else {
            problems.append(.init(field: "model", message: "unknown model \(quote(spec.model)): name one this daemon knows (\(known)) or its path"))
        }
        if config.maxSteps > 0, spec.steps > config.maxSteps {
            problems.append(.init(field: "steps", message: "\(spec.steps) is more than this daemon's limit of \(config.maxSteps)"))
        }
        if spec.computePrecision == .bf16 && !ComputePrecision.bf16Supported {
            problems.append(.init(field: "compute_precision", message: "\"bf16\" needs a CPU with AVX512_BF16 and this daemon's has none: use \"fp32\""))
        }
        problems += JobUpload.problems(spec, blobNames: blobNames)
        if !problems.isEmpty { throw JobFileError(file: "spec", problems: problems) }
        spec.outputs = OutputFormat.allCases
    }

    private var known: String {
        config.models.isEmpty ? "no models: add them to [models] in its configuration" : config.models.keys.sorted().joined(separator: ", ")
    }

    private func quote(_ s: String) -> String { "'" + s.prefix(200) + "'" }
}
