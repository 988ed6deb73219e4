import CDTensor
import Foundation

/// transformers `CLIPTextConfig` (the `text_encoder/config.json` of an SD pipeline). Keys this code
/// does not use are ignored.
public struct CLIPTextConfig: Codable, Sendable, Equatable {
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var maxPositionEmbeddings: Int
    public var hiddenAct: String
    public var layerNormEps: Float
    public var eosTokenId: Int?

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size", hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case maxPositionEmbeddings = "max_position_embeddings", hiddenAct = "hidden_act"
        case layerNormEps = "layer_norm_eps", eosTokenId = "eos_token_id"
    }

    /// SD1's CLIP ViT-L/14 text tower.
    public static let sd15 = CLIPTextConfig(vocabSize: 49408, hiddenSize: 768, intermediateSize: 3072, numHiddenLayers: 12,
                                            numAttentionHeads: 12, maxPositionEmbeddings: 77, hiddenAct: "quick_gelu",
                                            layerNormEps: 1e-5, eosTokenId: 49407)

    /// The MLP activation, or an error naming the field.
    func activation(file: String) throws -> Activation {
        switch hiddenAct {
        case "quick_gelu": return .quickGELU
        case "gelu": return .gelu
        default: throw ModelError.unsupportedConfig(file: file, field: "hidden_act", value: hiddenAct, supported: "quick_gelu, gelu")
        }
    }

    func validate(file: String) throws {
        guard hiddenSize > 0, numAttentionHeads > 0, hiddenSize % numAttentionHeads == 0 else {
            throw ModelError.unsupportedConfig(file: file, field: "hidden_size / num_attention_heads",
                                               value: "\(hiddenSize) / \(numAttentionHeads)", supported: "hidden_size divisible by the head count")
        }
        guard vocabSize > 0, intermediateSize > 0, numHiddenLayers > 0, maxPositionEmbeddings > 0 else {
            throw ModelError.unsupportedConfig(file: file, field: "sizes", value: "non-positive", supported: "positive sizes")
        }
        _ = try activation(file: file)
    }
}
