/// diffusers `AutoencoderKL` config (`vae/config.json`).
public struct AutoencoderKLConfig: Codable, Sendable, Equatable {
    public var inChannels: Int
    public var outChannels: Int
    public var downBlockTypes: [String]
    public var upBlockTypes: [String]
    public var blockOutChannels: [Int]
    public var layersPerBlock: Int
    public var latentChannels: Int
    public var normNumGroups: Int
    public var scalingFactor: Float
    public var shiftFactor: Float?
    public var actFn: String?
    public var useQuantConv: Bool?
    public var usePostQuantConv: Bool?
    public var midBlockAddAttention: Bool?

    enum CodingKeys: String, CodingKey {
        case inChannels = "in_channels", outChannels = "out_channels"
        case downBlockTypes = "down_block_types", upBlockTypes = "up_block_types"
        case blockOutChannels = "block_out_channels", layersPerBlock = "layers_per_block"
        case latentChannels = "latent_channels", normNumGroups = "norm_num_groups"
        case scalingFactor = "scaling_factor", shiftFactor = "shift_factor", actFn = "act_fn"
        case useQuantConv = "use_quant_conv", usePostQuantConv = "use_post_quant_conv"
        case midBlockAddAttention = "mid_block_add_attention"
    }

    public var levels: Int { blockOutChannels.count }
    var quantConv: Bool { useQuantConv ?? true }
    var postQuantConv: Bool { usePostQuantConv ?? true }
    var midAttention: Bool { midBlockAddAttention ?? true }

    /// SD 1.x/2.x VAE.
    public static let sd = AutoencoderKLConfig(
        inChannels: 3, outChannels: 3, downBlockTypes: Array(repeating: "DownEncoderBlock2D", count: 4),
        upBlockTypes: Array(repeating: "UpDecoderBlock2D", count: 4), blockOutChannels: [128, 256, 512, 512],
        layersPerBlock: 2, latentChannels: 4, normNumGroups: 32, scalingFactor: 0.18215, shiftFactor: nil, actFn: "silu",
        useQuantConv: true, usePostQuantConv: true, midBlockAddAttention: true)

    public func validate(file: String) throws {
        let check = ConfigValidator(file: file), unsupported = check.unsupported
        try check.checkLevels(down: downBlockTypes, up: upBlockTypes, channels: blockOutChannels)
        for t in downBlockTypes where t != "DownEncoderBlock2D" { throw unsupported("down_block_types", t, "DownEncoderBlock2D") }
        for t in upBlockTypes where t != "UpDecoderBlock2D" { throw unsupported("up_block_types", t, "UpDecoderBlock2D") }
        if let a = actFn, a != "silu" { throw unsupported("act_fn", a, "silu") }
        try check.checkGroups(normNumGroups, channels: blockOutChannels)
        guard layersPerBlock >= 1, latentChannels > 0, inChannels > 0, outChannels > 0 else {
            throw unsupported("layers_per_block / channels", "non-positive", "positive values")
        }
    }
}
