import Foundation

/// "Did you mean" for unknown keys and names: a known spelling from another tool (diffusers'
/// argument names) or the nearest candidate by edit distance (adjacent transpositions count one),
/// ignoring case and punctuation.
enum Suggestions {
    /// The best candidate for `word`, or nil when none is close.
    static func nearest(_ word: String, in candidates: [String], aliases: [String: String] = [:]) -> String? {
        if let a = aliases[word] ?? aliases[word.lowercased()] { return a }
        let w = Array(normalized(word).unicodeScalars)
        guard !w.isEmpty, w.count <= 64 else { return nil }
        var best: (String, Int)?
        for c in candidates {
            let d = distance(w, Array(normalized(c).unicodeScalars))
            if best == nil || d < best!.1 { best = (c, d) }
        }
        guard let (c, d) = best else { return nil }
        let limit = w.count <= 3 ? 1 : max(2, min(3, w.count / 3))
        return d <= limit ? c : nil
    }

    /// ` (did you mean 'x'?)` or an empty string.
    static func hint(_ word: String, in candidates: [String], aliases: [String: String] = [:]) -> String {
        nearest(word, in: candidates, aliases: aliases).map { "; did you mean '\($0)'?" } ?? ""
    }

    static func normalized(_ s: String) -> String {
        String(String.UnicodeScalarView(s.lowercased().unicodeScalars.filter { $0.properties.isAlphabetic || $0.properties.numericType != nil }))
    }

    /// Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of
    /// adjacent characters each cost one.
    static func distance(_ a: [Unicode.Scalar], _ b: [Unicode.Scalar]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var d = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { d[i][0] = i }
        for j in 0...b.count { d[0][j] = j }
        for i in 1...a.count {
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
                }
            }
        }
        return d[a.count][b.count]
    }
}

/// Quoted text for messages, shortened when long.
func quoted(_ s: String, limit: Int = 60) -> String {
    var t = s
    if t.count > limit { t = String(t.prefix(limit)) + "…" }
    return "\"" + t.replacingOccurrences(of: "\n", with: "\\n") + "\""
}
