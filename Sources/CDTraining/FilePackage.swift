import Foundation

/// Files sent from rank 0 to the other ranks in one broadcast (a job's images, generated class
/// images), so ranks on other nodes need no shared file system.
///
/// Encoding: `CDPK`, entry count (u32 LE), then per entry: path length (u32), UTF-8 path, data
/// length (u64), data. Paths are relative and checked when unpacked (no `..`, no absolute paths).
public struct FilePackage: Equatable, Sendable {
    public var entries: [(path: String, data: Data)]

    public init(entries: [(path: String, data: Data)] = []) { self.entries = entries }

    public static func == (a: FilePackage, b: FilePackage) -> Bool {
        a.entries.count == b.entries.count && zip(a.entries, b.entries).allSatisfy { $0.path == $1.path && $0.data == $1.data }
    }

    /// Every regular, non-hidden file directly in `folder` as `prefix/name` (`name` for an empty
    /// prefix), in name order.
    public mutating func add(folder: String, as prefix: String = "") throws {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        for name in names.sorted() where !name.hasPrefix(".") {
            var isFolder: ObjCBool = false
            let path = (folder as NSString).appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), !isFolder.boolValue else { continue }
            entries.append((prefix.isEmpty ? name : prefix + "/" + name, try Data(contentsOf: URL(fileURLWithPath: path))))
        }
    }

    public func encoded() -> [UInt8] {
        var out: [UInt8] = Array("CDPK".utf8)
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        put(UInt32(entries.count))
        for e in entries {
            let p = Array(e.path.utf8)
            put(UInt32(p.count))
            out += p
            put(UInt64(e.data.count))
            out += e.data
        }
        return out
    }

    public init(decoding bytes: [UInt8]) throws {
        var at = 0
        func bad(_ why: String) -> TrainingError { .invalidSetting(field: "file package", reason: why) }
        func take(_ n: Int) throws -> ArraySlice<UInt8> {
            guard n >= 0, n <= bytes.count - at else { throw bad("truncated at byte \(at)") }
            defer { at += n }
            return bytes[at..<(at + n)]
        }
        func int<T: FixedWidthInteger>(_: T.Type) throws -> T {
            try take(MemoryLayout<T>.size).reversed().reduce(T(0)) { $0 << 8 | T($1) }
        }
        guard try take(4).elementsEqual("CDPK".utf8) else { throw bad("not a file package") }
        let count = try int(UInt32.self)
        entries = []
        for _ in 0..<count {
            let path = String(decoding: try take(Int(try int(UInt32.self))), as: UTF8.self)
            let size = try int(UInt64.self)
            guard size <= UInt64(Int.max) else { throw bad("entry '\(path)' too large") }
            entries.append((path, Data(try take(Int(size)))))
        }
    }

    /// Writes every entry under `root` (folders created), replacing a file only when its content
    /// differs (ranks sharing a file system may already see rank 0's copy), atomically.
    public func write(under root: String) throws {
        let fm = FileManager.default
        for e in entries {
            let parts = e.path.split(separator: "/", omittingEmptySubsequences: false)
            guard !e.path.hasPrefix("/"), !parts.isEmpty, parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }) else {
                throw TrainingError.invalidSetting(field: "file package", reason: "unsafe path '\(e.path)'")
            }
            let target = URL(fileURLWithPath: root).appendingPathComponent(e.path)
            if let existing = try? Data(contentsOf: target), existing == e.data { continue }
            try fm.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            try e.data.write(to: target, options: .atomic)
        }
    }
}
