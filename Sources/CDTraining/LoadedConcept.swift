import CDModels
import CDTensor
import Foundation

/// A concept file's content in the form the pipeline applies. UNet keys are as the file spells
/// them (diffusers or LDM names) until `resolvingKeys(for:)`.
public struct LoadedConcept: @unchecked Sendable {
    public enum Format: String, Sendable { case bundle, diffusers, a1111Delta, embedding }
    public var format: Format
    /// The file or folder it came from (named in errors).
    public var source: String
    /// Values that replace the base (full trained weights), by UNet key.
    public var weights: [String: Tensor] = [:]
    /// Differences added to the UNet as strength × delta, by UNet key. A delta stored as low-rank
    /// factors (A1111 `"delta_factors"`, bundle `unet_us`/`unet_vh`) is here as their float32 product.
    public var deltas: [String: Tensor] = [:]
    /// Modifier tokens in id order, each with its embedding row [dim].
    public var tokens: [(name: String, embedding: Tensor)] = []
    /// Bundles: fingerprint of the base values of all `weights` and `deltas` keys.
    public var baseFingerprint: String?
    /// Bundles: `trainable`, `step`, `settings`.
    public var metadata: [String: String] = [:]

    public init(format: Format, source: String) {
        self.format = format
        self.source = source
    }

    /// The same concept with every UNet key in diffusers spelling for `config` (LDM keys
    /// `model.diffusion_model.…` and `diffusion_model.…` mapped back), shapes checked.
    public func resolvingKeys(for config: UNet2DConditionConfig) throws -> LoadedConcept {
        let shapes = Dictionary(UNet2DConditionModel.parameterSpecs(config).map { ($0.key, $0.shape) }, uniquingKeysWith: { a, _ in a })
        let fromLDM = Dictionary(UNet2DConditionModel.ldmKeyNames(config).map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        var problems: [String] = []
        func resolve(_ tensors: [String: Tensor]) -> [String: Tensor] {
            var out: [String: Tensor] = [:]
            for (key, t) in tensors.sorted(by: { $0.key < $1.key }) {
                guard let k = shapes[key] != nil ? key : fromLDM[key] ?? fromLDM["model." + key] else {
                    problems.append("'\(key)' is not a parameter of this UNet"); continue
                }
                if t.shape != shapes[k]! { problems.append("'\(key)' is \(t.shape), the UNet's is \(shapes[k]!)"); continue }
                if out[k] != nil { problems.append("'\(key)' appears twice") }
                out[k] = t
            }
            return out
        }
        var copy = self
        copy.weights = resolve(weights)
        copy.deltas = resolve(deltas)
        if !Set(copy.weights.keys).isDisjoint(with: copy.deltas.keys) { problems.append("a key has both a full value and a delta") }
        if !problems.isEmpty { throw ConceptFormatError.incompatible(file: source, reason: problems.joined(separator: "; ")) }
        return copy
    }
}
