import CDTensor

/// Gradient buffers of the trainable parameters of one model, by diffusers key. A key that is not
/// here is frozen: backward passes skip its weight-gradient GEMMs entirely. Backward accumulates
/// (`+=`), so gradient accumulation over micro-batches is calling backward again before `zero()`.
public final class ParameterGradients: @unchecked Sendable {
    public let tensors: [String: Tensor]

    /// Zeroed buffers for `keys`, shaped as in `specs`; a key outside the table is a programming error.
    public init(keys: [String], specs: [ParameterSpec]) {
        let shapes = Dictionary(specs.map { ($0.key, $0.shape) }, uniquingKeysWith: { a, _ in a })
        var t: [String: Tensor] = [:]
        for key in keys {
            guard let shape = shapes[key] else { preconditionFailure("'\(key)' is not a parameter of this model") }
            t[key] = Tensor(zeros: shape)
        }
        tensors = t
    }

    public subscript(_ key: String) -> Tensor? { tensors[key] }

    /// Whether any trainable key starts with `prefix` (a block's parameters).
    public func trains(prefix: String) -> Bool { tensors.keys.contains { $0.hasPrefix(prefix) } }

    public func zero() { for t in tensors.values { t.zero() } }
}
