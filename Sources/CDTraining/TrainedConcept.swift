import Foundation
import CDModels
import CDTensor
import Crypto

/// What a Custom Diffusion run produces, independent of any file format: the trained UNet tensors
/// (full values) beside their base values, and the modifier-token embeddings. The output writers
/// (diffusers, A1111, bundle) and the loaders that apply a file to a pipeline go through this.
public struct TrainedConcept: @unchecked Sendable {
    /// Trained UNet tensors by diffusers key (e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight`).
    public var unet: [String: Tensor]
    /// The base model's values of the same keys (what deltas are taken against).
    public var base: [String: Tensor]
    /// Modifier tokens in id order (`<new1>`, `<new2>`, …) with their embedding rows [dim].
    public var tokens: [(name: String, embedding: Tensor)]
    /// The trainable-set spelling of the job: "crossattn_kv", "crossattn", or the pattern list joined by ",".
    public var trainable: String
    /// SHA-256 (hex) over the base values of `base`'s keys, in sorted key order: a bundle applies
    /// only to a model whose weights give the same fingerprint.
    public var baseFingerprint: String
    /// Optimizer steps taken.
    public var step: Int
    /// Job settings as a JSON object string (written into metadata as is).
    public var settings: String
    /// The UNet's config (block structure for LDM key names).
    public var unetConfig: UNet2DConditionConfig

    public init(unet: [String: Tensor], base: [String: Tensor], tokens: [(name: String, embedding: Tensor)],
                trainable: String, baseFingerprint: String, step: Int, settings: String, unetConfig: UNet2DConditionConfig) {
        self.unet = unet
        self.base = base
        self.tokens = tokens
        self.trainable = trainable
        self.baseFingerprint = baseFingerprint
        self.step = step
        self.settings = settings
        self.unetConfig = unetConfig
    }
}

extension TrainedConcept {
    /// SHA-256 (hex) over `tensors` in sorted key order: each key's UTF-8 bytes, its shape, then
    /// its float32 values little-endian. Identifies the base weights a set of deltas belongs to.
    public static func fingerprint(of tensors: [String: Tensor]) -> String {
        var hash = SHA256()
        for key in tensors.keys.sorted() {
            let t = tensors[key]!
            hash.update(data: Array(key.utf8) + [0])
            for d in t.shape { withUnsafeBytes(of: UInt64(d).littleEndian) { hash.update(bufferPointer: $0) } }
            hash.update(bufferPointer: UnsafeRawBufferPointer(start: t.pointer, count: t.count * MemoryLayout<Float>.stride))
        }
        return hash.finalize().map { String(format: "%02x", $0) }.joined()
    }
}
