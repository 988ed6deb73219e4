/// The checks config `validate` methods share, each error naming the file and field.
struct ConfigValidator {
    let file: String

    func unsupported(_ field: String, _ value: String, _ supported: String) -> ModelError {
        .unsupportedConfig(file: file, field: field, value: value, supported: supported)
    }

    /// One down and one up block type per entry of block_out_channels.
    func checkLevels(down: [String], up: [String], channels: [Int]) throws {
        guard !channels.isEmpty, down.count == channels.count, up.count == channels.count else {
            throw unsupported("down_block_types / up_block_types / block_out_channels",
                              "\(down.count) / \(up.count) / \(channels.count) entries", "one entry per level each")
        }
    }

    /// A GroupNorm group count that divides every block's channels.
    func checkGroups(_ groups: Int, channels: [Int]) throws {
        for c in channels where groups <= 0 || c % groups != 0 {
            throw unsupported("norm_num_groups", "\(groups) for \(c) channels", "a group count dividing every block's channels")
        }
    }
}
