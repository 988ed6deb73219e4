import Foundation

/// The text stages of the CLIP tokenizer in front of BPE, as transformers 5's `CLIPTokenizer`
/// (tokenizers backend) runs them: normalizer, pre-tokenizer and byte-level alphabet.
/// See docs/sd-architecture-spec.md §8.
enum CLIPByteLevel {
    /// `bytes_to_unicode`: bytes 33–126, 161–172 and 174–255 stand for themselves; the other 68 bytes
    /// (0–32, 127–160, 173), in increasing order, become U+0100, U+0101, … (space → U+0120 "Ġ").
    static let characters: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            if (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) {
                table[b] = Unicode.Scalar(UInt32(b))!
            } else {
                table[b] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return table
    }()

    /// The byte-level spelling of UTF-8 bytes (one character per byte).
    static func spell<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var view = String.UnicodeScalarView()
        for b in bytes { view.append(characters[Int(b)]) }
        return String(view)
    }
}

/// The tokenizers-backend normalizer: NFC, then every run of Unicode whitespace (the White_Space
/// property, as Oniguruma's `\s`) becomes one space, then each scalar is lower-cased on its own
/// (full case mapping, no context rules — what Rust's `char::to_lowercase` does). No trimming, no ftfy,
/// no HTML unescaping.
enum CLIPNormalizer {
    static func normalize<C: Collection>(_ text: C) -> [Unicode.Scalar] where C.Element == Unicode.Scalar {
        let composed: [Unicode.Scalar]
        if text.allSatisfy(\.isASCII) {
            composed = Array(text)
        } else {
            var view = String.UnicodeScalarView()
            view.append(contentsOf: text)
            composed = Array(String(view).precomposedStringWithCanonicalMapping.unicodeScalars)
        }
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(composed.count)
        var inWhitespace = false
        for u in composed {
            if u.properties.isWhitespace {
                if !inWhitespace { out.append(" ") }
                inWhitespace = true
                continue
            }
            inWhitespace = false
            if u.isASCII {
                out.append(u.value >= 65 && u.value <= 90 ? Unicode.Scalar(UInt8(u.value + 32)) : u)
            } else {
                out.append(contentsOf: u.properties.lowercaseMapping.unicodeScalars)
            }
        }
        return out
    }

    static func normalize(_ text: String) -> [Unicode.Scalar] { normalize(text.unicodeScalars) }
}

/// The pre-tokenizer: the CLIP split regex
/// `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
/// (matches kept, the rest dropped), written as a scanner over Unicode scalars, followed by the
/// ByteLevel pre-tokenizer's own GPT-2 split (`use_regex: true`). On a CLIP piece the GPT-2 regex only
/// changes the two special-token literals, which it cuts into `<|`, the letters, and `|>`.
enum CLIPPreTokenizer {
    private enum Kind { case letter, number, whitespace, other }

    private static func kind(_ u: Unicode.Scalar) -> Kind {
        if u.isASCII {
            switch u.value {
            case 97...122, 65...90: return .letter
            case 48...57: return .number
            case 9...13, 32: return .whitespace
            default: return .other
            }
        }
        let p = u.properties
        if p.isWhitespace { return .whitespace }
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    private static let specials: [[Unicode.Scalar]] = ["<|startoftext|>", "<|endoftext|>"].map { Array($0.unicodeScalars) }
    private static let contractions: [[Unicode.Scalar]] = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"].map { Array($0.unicodeScalars) }

    private static func matches(_ s: [Unicode.Scalar], at i: Int, end: Int, _ literal: [Unicode.Scalar]) -> Bool {
        guard end - i >= literal.count else { return false }
        for k in 0..<literal.count where s[i + k] != literal[k] { return false }
        return true
    }

    /// The pieces of `s[range]`, as index ranges into `s`, in order.
    static func pieces(_ s: [Unicode.Scalar], in range: Range<Int>) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var i = range.lowerBound
        let end = range.upperBound
        scan: while i < end {
            let u = s[i]
            if u == "<" {
                for literal in specials where matches(s, at: i, end: end, literal) {
                    let n = literal.count
                    out.append(i..<(i + 2))
                    out.append((i + 2)..<(i + n - 2))
                    out.append((i + n - 2)..<(i + n))
                    i += n
                    continue scan
                }
            } else if u == "'" {
                for literal in contractions where matches(s, at: i, end: end, literal) {
                    out.append(i..<(i + literal.count))
                    i += literal.count
                    continue scan
                }
            }
            switch kind(u) {
            case .whitespace:
                i += 1
            case .number:
                out.append(i..<(i + 1))
                i += 1
            case .letter:
                var j = i + 1
                while j < end, kind(s[j]) == .letter { j += 1 }
                out.append(i..<j)
                i = j
            case .other:
                var j = i + 1
                while j < end, kind(s[j]) == .other { j += 1 }
                out.append(i..<j)
                i = j
            }
        }
        return out
    }
}
