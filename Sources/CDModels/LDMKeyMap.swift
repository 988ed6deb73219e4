/// Names of the original (CompVis LDM) single-file checkpoint for each diffusers parameter key,
/// derived from the block structure (sd-architecture-spec §6; the fixture README's LDM section).
enum LDMKeyMap {
    static let unetPrefix = "model.diffusion_model."
    static let vaePrefix = "first_stage_model."
    static let textPrefix = "cond_stage_model.transformer."

    /// diffusers UNet key → LDM key (with `model.diffusion_model.`).
    static func unet(_ c: UNet2DConditionConfig) -> [String: String] {
        let l = c.layersPerBlock
        var map: [String: String] = [:]
        for spec in UNet2DConditionModel.parameterSpecs(c) {
            let parts = spec.key.split(separator: ".").map(String.init)
            let ldm: String
            switch parts[0] {
            case "time_embedding":
                ldm = "time_embed.\(parts[1] == "linear_1" ? 0 : 2)." + rest(parts, 2)
            case "conv_in": ldm = "input_blocks.0.0." + rest(parts, 1)
            case "conv_norm_out": ldm = "out.0." + rest(parts, 1)
            case "conv_out": ldm = "out.2." + rest(parts, 1)
            case "down_blocks":
                let i = Int(parts[1])!
                switch parts[2] {
                case "resnets": ldm = "input_blocks.\(i * (l + 1) + Int(parts[3])! + 1).0." + resnet(parts, 4)
                case "attentions": ldm = "input_blocks.\(i * (l + 1) + Int(parts[3])! + 1).1." + rest(parts, 4)
                default: ldm = "input_blocks.\((i + 1) * (l + 1)).0.op." + rest(parts, 5)  // downsamplers.0.conv
                }
            case "mid_block":
                let j = Int(parts[2])!  // mid_block.{resnets|attentions}.j.…
                ldm = parts[1] == "attentions" ? "middle_block.1." + rest(parts, 3) : "middle_block.\(j == 0 ? 0 : 2)." + resnet(parts, 3)
            default:  // up_blocks
                let i = Int(parts[1])!
                switch parts[2] {
                case "resnets": ldm = "output_blocks.\(i * (l + 1) + Int(parts[3])!).0." + resnet(parts, 4)
                case "attentions": ldm = "output_blocks.\(i * (l + 1) + Int(parts[3])!).1." + rest(parts, 4)
                default:  // upsamplers.0.conv: after the attention when the level has one
                    let slot = c.upBlockTypes[i] == "CrossAttnUpBlock2D" ? 2 : 1
                    ldm = "output_blocks.\(i * (l + 1) + l).\(slot).conv." + rest(parts, 5)
                }
            }
            map[spec.key] = unetPrefix + ldm
        }
        return map
    }

    /// diffusers VAE key → LDM key (with `first_stage_model.`).
    static func vae(_ c: AutoencoderKLConfig) -> [String: String] {
        let n = c.levels
        var map: [String: String] = [:]
        for spec in AutoencoderKL.parameterSpecs(c) {
            let parts = spec.key.split(separator: ".").map(String.init)
            var ldm: String
            if parts[0] == "encoder" || parts[0] == "decoder" {
                let side = parts[0]
                switch parts[1] {
                case "down_blocks", "up_blocks":
                    let i = Int(parts[2])!
                    let level = side == "encoder" ? "down.\(i)" : "up.\(n - 1 - i)"
                    if parts[3] == "resnets" {
                        ldm = "\(side).\(level).block.\(parts[4])." + vaeResnet(parts, 5)
                    } else {
                        ldm = "\(side).\(level).\(side == "encoder" ? "downsample" : "upsample").conv." + rest(parts, 6)
                    }
                case "mid_block":
                    if parts[2] == "attentions" {
                        let names = ["group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"]
                        let tail = parts[4] == "to_out" ? rest(parts, 6) : rest(parts, 5)
                        ldm = "\(side).mid.attn_1.\(names[parts[4]]!)." + tail
                    } else {
                        ldm = "\(side).mid.block_\(Int(parts[3])! + 1)." + vaeResnet(parts, 4)
                    }
                case "conv_norm_out": ldm = "\(side).norm_out." + rest(parts, 2)
                default: ldm = spec.key  // conv_in, conv_out
                }
            } else {
                ldm = spec.key  // quant_conv, post_quant_conv
            }
            map[spec.key] = vaePrefix + ldm
        }
        return map
    }

    private static func rest(_ parts: [String], _ from: Int) -> String { parts[from...].joined(separator: ".") }

    /// UNet resnet parts: norm1 → in_layers.0, conv1 → in_layers.2, time_emb_proj → emb_layers.1,
    /// norm2 → out_layers.0, conv2 → out_layers.3, conv_shortcut → skip_connection.
    private static func resnet(_ parts: [String], _ from: Int) -> String {
        let names = ["norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                     "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"]
        return names[parts[from]]! + "." + rest(parts, from + 1)
    }

    /// VAE resnet parts keep their names but for conv_shortcut → nin_shortcut.
    private static func vaeResnet(_ parts: [String], _ from: Int) -> String {
        (parts[from] == "conv_shortcut" ? "nin_shortcut" : parts[from]) + "." + rest(parts, from + 1)
    }
}
