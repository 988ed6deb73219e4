import Foundation

/// A config value diffusers accepts as one number or one per block.
public enum PerBlock: Codable, Sendable, Equatable {
    case all(Int)
    case each([Int])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let v = try? c.decode(Int.self) { self = .all(v) } else { self = .each(try c.decode([Int].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .all(let v): try c.encode(v)
        case .each(let v): try c.encode(v)
        }
    }

    func values(count: Int) -> [Int]? {
        switch self {
        case .all(let v): return Array(repeating: v, count: count)
        case .each(let v): return v.count == count ? v : nil
        }
    }
}

/// diffusers `UNet2DConditionModel` config (`unet/config.json`), SD 1.x/2.x block structure.
/// Keys this code does not read are ignored; values it cannot run are rejected by `validate`.
public struct UNet2DConditionConfig: Codable, Sendable, Equatable {
    public var inChannels: Int
    public var outChannels: Int
    public var downBlockTypes: [String]
    public var upBlockTypes: [String]
    public var midBlockType: String?
    public var blockOutChannels: [Int]
    public var layersPerBlock: Int
    public var normNumGroups: Int
    public var normEps: Float
    public var crossAttentionDim: Int
    public var attentionHeadDim: PerBlock
    public var numAttentionHeads: PerBlock?
    public var transformerLayersPerBlock: PerBlock?
    public var useLinearProjection: Bool?
    public var flipSinToCos: Bool?
    public var freqShift: Int?
    public var actFn: String?
    public var resnetTimeScaleShift: String?
    public var classEmbedType: String?
    public var additionEmbedType: String?
    public var timeEmbeddingType: String?
    public var onlyCrossAttention: Bool?
    public var dualCrossAttention: Bool?
    public var convInKernel: Int?
    public var convOutKernel: Int?
    public var centerInputSample: Bool?
    public var timeCondProjDim: Int?
    public var encoderHidDim: Int?
    public var downsamplePadding: Int?
    public var midBlockScaleFactor: Float?
    public var timeEmbeddingDim: Int?
    public var sampleSize: Int?

    enum CodingKeys: String, CodingKey {
        case inChannels = "in_channels", outChannels = "out_channels"
        case downBlockTypes = "down_block_types", upBlockTypes = "up_block_types", midBlockType = "mid_block_type"
        case blockOutChannels = "block_out_channels", layersPerBlock = "layers_per_block"
        case normNumGroups = "norm_num_groups", normEps = "norm_eps", crossAttentionDim = "cross_attention_dim"
        case attentionHeadDim = "attention_head_dim", numAttentionHeads = "num_attention_heads"
        case transformerLayersPerBlock = "transformer_layers_per_block", useLinearProjection = "use_linear_projection"
        case flipSinToCos = "flip_sin_to_cos", freqShift = "freq_shift", actFn = "act_fn"
        case resnetTimeScaleShift = "resnet_time_scale_shift", classEmbedType = "class_embed_type"
        case additionEmbedType = "addition_embed_type", timeEmbeddingType = "time_embedding_type"
        case onlyCrossAttention = "only_cross_attention", dualCrossAttention = "dual_cross_attention"
        case convInKernel = "conv_in_kernel", convOutKernel = "conv_out_kernel", centerInputSample = "center_input_sample"
        case timeCondProjDim = "time_cond_proj_dim", encoderHidDim = "encoder_hid_dim"
        case downsamplePadding = "downsample_padding", midBlockScaleFactor = "mid_block_scale_factor"
        case timeEmbeddingDim = "time_embedding_dim", sampleSize = "sample_size"
    }

    public var levels: Int { blockOutChannels.count }
    /// Attention heads per down level (diffusers: `num_attention_heads or attention_head_dim`, the
    /// latter being SD's historical name for the head count).
    public var headsPerLevel: [Int] { (numAttentionHeads ?? attentionHeadDim).values(count: levels) ?? [] }
    public var transformerLayersPerLevel: [Int] { (transformerLayersPerBlock ?? .all(1)).values(count: levels) ?? [] }
    public var timeEmbedDim: Int { timeEmbeddingDim ?? 4 * blockOutChannels[0] }
    public var linearProjection: Bool { useLinearProjection ?? false }

    /// SD1.5's UNet (runwayml/stable-diffusion-v1-5 `unet/config.json`).
    public static let sd15 = UNet2DConditionConfig(
        inChannels: 4, outChannels: 4,
        downBlockTypes: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        upBlockTypes: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        midBlockType: "UNetMidBlock2DCrossAttn", blockOutChannels: [320, 640, 1280, 1280], layersPerBlock: 2,
        normNumGroups: 32, normEps: 1e-5, crossAttentionDim: 768, attentionHeadDim: .all(8), numAttentionHeads: nil,
        transformerLayersPerBlock: nil, useLinearProjection: false, flipSinToCos: true, freqShift: 0, actFn: "silu",
        resnetTimeScaleShift: "default", classEmbedType: nil, additionEmbedType: nil, timeEmbeddingType: "positional",
        onlyCrossAttention: false, dualCrossAttention: false, convInKernel: 3, convOutKernel: 3, centerInputSample: false,
        timeCondProjDim: nil, encoderHidDim: nil, downsamplePadding: 1, midBlockScaleFactor: 1, timeEmbeddingDim: nil,
        sampleSize: 64)

    /// Rejects every setting the SD1/SD2 block implementation here does not compute.
    public func validate(file: String) throws {
        let check = ConfigValidator(file: file), unsupported = check.unsupported
        try check.checkLevels(down: downBlockTypes, up: upBlockTypes, channels: blockOutChannels)
        for t in downBlockTypes where !["CrossAttnDownBlock2D", "DownBlock2D"].contains(t) {
            throw unsupported("down_block_types", t, "CrossAttnDownBlock2D, DownBlock2D")
        }
        for t in upBlockTypes where !["CrossAttnUpBlock2D", "UpBlock2D"].contains(t) {
            throw unsupported("up_block_types", t, "CrossAttnUpBlock2D, UpBlock2D")
        }
        if let m = midBlockType, m != "UNetMidBlock2DCrossAttn" { throw unsupported("mid_block_type", m, "UNetMidBlock2DCrossAttn") }
        guard headsPerLevel.count == levels else {
            throw unsupported("num_attention_heads / attention_head_dim", "\(numAttentionHeads ?? attentionHeadDim)", "a number or one per level")
        }
        guard transformerLayersPerLevel.count == levels, transformerLayersPerLevel.allSatisfy({ $0 >= 1 }) else {
            throw unsupported("transformer_layers_per_block", "\(transformerLayersPerBlock.map { "\($0)" } ?? "nil")", "a positive number or one per level")
        }
        for (c, h) in zip(blockOutChannels, headsPerLevel) where h <= 0 || c % h != 0 {
            throw unsupported("attention heads", "\(h) heads for \(c) channels", "a head count dividing the channels")
        }
        try check.checkGroups(normNumGroups, channels: blockOutChannels)
        guard layersPerBlock >= 1, inChannels > 0, outChannels > 0, crossAttentionDim > 0 else {
            throw unsupported("layers_per_block / channels", "non-positive", "positive values")
        }
        if let a = actFn, a != "silu" { throw unsupported("act_fn", a, "silu") }
        if let s = resnetTimeScaleShift, s != "default" { throw unsupported("resnet_time_scale_shift", s, "default") }
        if let c = classEmbedType { throw unsupported("class_embed_type", c, "null") }
        if let a = additionEmbedType { throw unsupported("addition_embed_type", a, "null (SDXL-style conditioning is not implemented)") }
        if let t = timeEmbeddingType, t != "positional" { throw unsupported("time_embedding_type", t, "positional") }
        if onlyCrossAttention == true { throw unsupported("only_cross_attention", "true", "false") }
        if dualCrossAttention == true { throw unsupported("dual_cross_attention", "true", "false") }
        if let k = convInKernel, k != 3 { throw unsupported("conv_in_kernel", "\(k)", "3") }
        if let k = convOutKernel, k != 3 { throw unsupported("conv_out_kernel", "\(k)", "3") }
        if centerInputSample == true { throw unsupported("center_input_sample", "true", "false") }
        if let d = timeCondProjDim { throw unsupported("time_cond_proj_dim", "\(d)", "null") }
        if let d = encoderHidDim { throw unsupported("encoder_hid_dim", "\(d)", "null") }
        if let p = downsamplePadding, p != 1 { throw unsupported("downsample_padding", "\(p)", "1") }
        if let s = midBlockScaleFactor, s != 1 { throw unsupported("mid_block_scale_factor", "\(s)", "1") }
    }
}
