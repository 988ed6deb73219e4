import Foundation

/// Lexical path helpers (no symlink resolution): `..` is collapsed textually.
enum Paths {
    static func isAbsolute(_ p: String) -> Bool { p.hasPrefix("/") }

    /// `~` and `~/…` expanded with the home folder.
    static func expandingTilde(_ p: String) -> String {
        guard p == "~" || p.hasPrefix("~/") else { return p }
        let home = ProcessInfo.processInfo.environment["HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? FileManager.default.homeDirectoryForCurrentUser.path
        return home + String(p.dropFirst())
    }

    /// The folder part of `p` ("" when it has none; "/" for a file at the root).
    static func parent(_ p: String) -> String {
        guard let slash = p.lastIndex(of: "/") else { return "" }
        let head = String(p[..<slash])
        return head.isEmpty ? "/" : head
    }

    /// The last component of `p`.
    static func lastComponent(_ p: String) -> String {
        guard let slash = p.lastIndex(of: "/") else { return p }
        return String(p[p.index(after: slash)...])
    }

    /// `b` inside `a` (b itself when absolute or `a` is empty), normalized.
    static func join(_ a: String, _ b: String) -> String {
        if isAbsolute(b) || a.isEmpty { return normalized(b) }
        return normalized(a + "/" + b)
    }

    /// Without `.` components, empty components and `x/..` pairs; relative paths keep leading `..`.
    static func normalized(_ p: String) -> String {
        let absolute = isAbsolute(p)
        var parts: [Substring] = []
        for c in p.split(separator: "/", omittingEmptySubsequences: true) {
            if c == "." { continue }
            if c == "..", let last = parts.last, last != ".." {
                parts.removeLast()
                continue
            }
            if c == "..", absolute { continue }
            parts.append(c)
        }
        let body = parts.joined(separator: "/")
        if absolute { return "/" + body }
        return body.isEmpty ? "." : body
    }

    /// `p` as an absolute path: `~` expanded, relative paths taken inside `folder` (itself taken
    /// inside the working directory when relative).
    static func absolute(_ p: String, relativeTo folder: String) -> String {
        let e = expandingTilde(p)
        if isAbsolute(e) { return normalized(e) }
        var base = expandingTilde(folder)
        if !isAbsolute(base) { base = join(FileManager.default.currentDirectoryPath, base) }
        return join(base, e)
    }
}
