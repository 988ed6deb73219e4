import CDModels
import Foundation

/// Which UNet parameters a job trains (spec 2.3). The modifier-token rows train in every mode.
public enum TrainableSet: Sendable, Equatable {
    /// attn2 `to_k.weight` and `to_v.weight` of every transformer block (the method's default).
    case crossattnKV
    /// every attn2 parameter: `to_q`, `to_k`, `to_v`, `to_out.0` weight and bias.
    case crossattn
    /// diffusers keys matching any glob (`*` any run of characters, `?` one), e.g.
    /// `["*attn2.to_k.weight", "up_blocks.3.*"]`; `["*"]` is the whole UNet.
    case patterns([String])

    /// Parses the job-file spelling: "crossattn_kv", "crossattn", or a pattern list.
    public init(_ name: String) throws {
        switch name {
        case "crossattn_kv": self = .crossattnKV
        case "crossattn": self = .crossattn
        default: throw TrainingError.invalidSetting(field: "train", reason: "'\(name)' is not \"crossattn_kv\" or \"crossattn\" (or give a list of key patterns)")
        }
    }

    /// The job-file spelling; a pattern list as a JSON array.
    public var name: String {
        switch self {
        case .crossattnKV: return "crossattn_kv"
        case .crossattn: return "crossattn"
        case let .patterns(p):
            let data = (try? JSONSerialization.data(withJSONObject: p)) ?? Data("[]".utf8)
            return String(decoding: data, as: UTF8.self)
        }
    }

    /// The UNet keys this set selects, in the UNet's parameter-table order. A pattern that selects
    /// nothing is an error (a typo would otherwise train less than asked).
    public func keys(in specs: [ParameterSpec]) throws -> [String] {
        let all = specs.map(\.key)
        let attn2 = all.filter { $0.contains(".transformer_blocks.") && $0.contains(".attn2.") }
        switch self {
        case .crossattnKV:
            return attn2.filter { $0.hasSuffix(".to_k.weight") || $0.hasSuffix(".to_v.weight") }
        case .crossattn:
            return attn2
        case let .patterns(patterns):
            guard !patterns.isEmpty else { throw TrainingError.invalidSetting(field: "train", reason: "the pattern list is empty") }
            var keys: [String] = []
            for p in patterns {
                let hits = all.filter { Self.matches($0, p) }
                if hits.isEmpty {
                    throw TrainingError.invalidSetting(field: "train", reason: "pattern '\(p)' matches no UNet parameter (diffusers names, e.g. 'down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight')")
                }
                keys += hits
            }
            let chosen = Set(keys)
            return all.filter { chosen.contains($0) }
        }
    }

    /// Glob match over the whole key.
    static func matches(_ key: String, _ pattern: String) -> Bool {
        let k = Array(key.utf8), p = Array(pattern.utf8)
        var (i, j, star, mark) = (0, 0, -1, 0)
        while i < k.count {
            if j < p.count && (p[j] == UInt8(ascii: "?") || p[j] == k[i]) {
                i += 1; j += 1
            } else if j < p.count && p[j] == UInt8(ascii: "*") {
                star = j; mark = i; j += 1
            } else if star >= 0 {
                j = star + 1; mark += 1; i = mark
            } else {
                return false
            }
        }
        while j < p.count && p[j] == UInt8(ascii: "*") { j += 1 }
        return j == p.count
    }
}
