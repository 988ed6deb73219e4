import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Builds a safetensors file from fp32 tensors, stored as F32, F16 or BF16, plus `__metadata__`.
///
/// Layout as the reference writer: header padded with spaces to a multiple of 8, tensors ordered
/// by descending element size then name, so each starts aligned to its element size. `write`
/// goes to a temporary file in the same directory and renames it over the target after fsync,
/// so an existing file is never left half-written.
public struct SafetensorsWriter {
    public enum StoredType: String, Sendable { case f32 = "F32", f16 = "F16", bf16 = "BF16" }

    private struct Item {
        let name: String
        let shape: [Int]
        let type: StoredType
        let values: Tensor
        var byteCount: Int { values.count * (type == .f32 ? 4 : 2) }
    }

    public var metadata: [String: String]
    private var items: [Item] = []

    public init(metadata: [String: String] = [:]) { self.metadata = metadata }

    public mutating func add(_ name: String, _ tensor: Tensor, as type: StoredType = .f32) {
        precondition(!name.isEmpty && name != "__metadata__", "invalid tensor name '\(name)'")
        precondition(!items.contains { $0.name == name }, "tensor '\(name)' added twice")
        items.append(Item(name: name, shape: tensor.shape, type: type, values: tensor))
    }

    /// Tensors in file order: descending element size, then name.
    private var ordered: [Item] {
        items.sorted { a, b in
            a.type == .f32 && b.type != .f32 ? true : (a.type != .f32 && b.type == .f32 ? false : a.name < b.name)
        }
    }

    /// The 8-byte length and the JSON header, padded with spaces to a multiple of 8.
    private func headerBytes(_ ordered: [Item]) -> [UInt8] {
        var fields: [String] = []
        if !metadata.isEmpty {
            let m = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            fields.append("\"__metadata__\":{\(m.joined(separator: ","))}")
        }
        var offset = 0
        for item in ordered {
            let shape = item.shape.map(String.init).joined(separator: ",")
            fields.append("\(jsonString(item.name)):{\"dtype\":\"\(item.type.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + item.byteCount)]}")
            offset += item.byteCount
        }
        var header = Array(("{" + fields.joined(separator: ",") + "}").utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        return withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header
    }

    /// Calls `sink` with the file's bytes in order: the header, then each tensor converted in
    /// chunks of at most 1 Mi elements, so memory stays small whatever the file size.
    private func stream(_ sink: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        let ordered = self.ordered
        try headerBytes(ordered).withUnsafeBytes(sink)
        let chunk = 1 << 20
        for item in ordered {
            let src = item.values.pointer
            var start = 0
            while start < item.values.count {
                let n = min(chunk, item.values.count - start)
                switch item.type {
                case .f32:
                    var le = [UInt32](repeating: 0, count: n)
                    for i in 0..<n { le[i] = src[start + i].bitPattern.littleEndian }
                    try le.withUnsafeBytes(sink)
                case .f16, .bf16:
                    var le = [UInt16](repeating: 0, count: n)
                    for i in 0..<n {
                        let x = src[start + i]
                        le[i] = (item.type == .f16 ? HalfPrecision.narrowF16(x) : HalfPrecision.narrowBF16(x)).littleEndian
                    }
                    try le.withUnsafeBytes(sink)
                }
                start += n
            }
        }
    }

    /// The complete file contents (for small files and tests; `write` streams instead).
    public func serialized() -> Data {
        var out = Data()
        stream { out.append(contentsOf: $0) }
        return out
    }

    /// Writes atomically: a temporary file beside `path`, fsync, rename over `path`, fsync of the
    /// directory, so after a crash the path holds either the old file or the complete new one.
    /// Tensors are read now, not when they were added.
    public func write(to path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        let folder = dir.isEmpty ? "." : dir
        let tmp = folder + "/.\((path as NSString).lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw SafetensorsError.writeFailed(file: path, reason: String(cString: strerror(errno))) }
        var failure: String?
        do {
            try stream { raw in
                var done = 0
                while done < raw.count {
                    let n = Glibc.write(fd, raw.baseAddress! + done, raw.count - done)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw SafetensorsError.writeFailed(file: path, reason: String(cString: strerror(errno)))
                    }
                    done += n
                }
            }
            if fsync(fd) != 0 { failure = String(cString: strerror(errno)) }
        } catch let SafetensorsError.writeFailed(_, reason) {
            failure = reason
        }
        close(fd)
        if failure == nil && rename(tmp, path) != 0 { failure = String(cString: strerror(errno)) }
        if let failure {
            unlink(tmp)
            throw SafetensorsError.writeFailed(file: path, reason: failure)
        }
        let dirfd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirfd >= 0 { fsync(dirfd); close(dirfd) }
    }
}

/// A JSON string literal.
func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}
