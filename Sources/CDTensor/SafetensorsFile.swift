import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One tensor's header entry.
public struct SafetensorsEntry: Sendable, Equatable {
    public let name: String
    public let dtype: SafetensorsDType
    public let shape: [Int]
    /// Byte range relative to the start of the data section (end exclusive).
    public let begin: Int, end: Int
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A memory-mapped safetensors file (format: `shared/docs/sd-architecture-spec.md` §7.1).
///
/// The whole header is validated before any data is touched: header length within the file and
/// at most 100 MB, well-formed JSON object, known dtypes, shape × dtype size equal to the byte
/// range, ranges inside the data section, and the data section covered exactly: no overlaps, no
/// holes, no trailing bytes (what the reference implementation accepts, and no more).
/// F32 tensors are returned as views of the read-only mapping, without a copy (writing through
/// such a view faults: `copy()` a tensor that will be modified); F16/BF16 are widened to fp32.
public final class SafetensorsFile: @unchecked Sendable {
    public static let maxHeaderBytes = 100_000_000

    public let path: String
    public let metadata: [String: String]
    /// Entries in data order.
    public let entries: [SafetensorsEntry]
    private let byName: [String: Int]
    private let mapping: UnsafeMutableRawPointer?
    private let mappedSize: Int
    private let dataStart: Int

    public var names: [String] { entries.map(\.name) }

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SafetensorsError.cannotOpen(file: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw SafetensorsError.cannotOpen(file: path, reason: String(cString: strerror(errno))) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw SafetensorsError.cannotOpen(file: path, reason: "not a regular file") }
        let size = Int(st.st_size)
        guard size >= 10 else { throw SafetensorsError.truncated(file: path, size: size) }
        // Read-only: no commit charge for multi-GB checkpoints, and weights cannot be altered by accident.
        guard let map = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), map != MAP_FAILED else {
            throw SafetensorsError.cannotOpen(file: path, reason: "mmap: \(String(cString: strerror(errno)))")
        }
        do {
            let parsed = try SafetensorsFile.parseHeader(UnsafeRawPointer(map), size: size, file: path)
            self.metadata = parsed.metadata
            self.entries = parsed.entries
            self.dataStart = parsed.dataStart
        } catch {
            munmap(map, size)
            throw error
        }
        self.mapping = map
        self.mappedSize = size
        self.byName = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($1.name, $0) })
    }

    deinit { if let mapping { munmap(mapping, mappedSize) } }

    public func entry(_ name: String) throws -> SafetensorsEntry {
        guard let i = byName[name] else { throw SafetensorsError.missingTensor(file: path, tensor: name) }
        return entries[i]
    }

    public func contains(_ name: String) -> Bool { byName[name] != nil }

    /// The tensor as fp32 (F32 viewed in place when 4-byte aligned; F16/BF16 widened).
    public func tensor(_ name: String) throws -> Tensor {
        let e = try entry(name)
        let src = mapping! + dataStart + e.begin
        let n = e.elementCount
        switch e.dtype {
        case .F32:
            if Int(bitPattern: src) % MemoryLayout<Float>.alignment == 0 {
                let storage = TensorStorage(borrowing: src.assumingMemoryBound(to: Float.self), capacity: n, owner: self)
                return Tensor(storage: storage, shape: e.shape)
            }
            let t = Tensor(zeros: e.shape)
            memcpy(t.pointer, src, n * 4)
            return t
        case .F16, .BF16:
            let t = Tensor(zeros: e.shape)
            let bf16 = e.dtype == .BF16
            let dst = t.pointer
            ThreadPool.shared.parallelRanges(n, grain: 65536) { r in
                for i in r {
                    let bits = (src + 2 * i).loadUnaligned(as: UInt16.self)
                    dst[i] = bf16 ? HalfPrecision.widenBF16(bits) : HalfPrecision.widenF16(bits)
                }
            }
            release(UnsafeRawPointer(src), bytes: 2 * n)
            return t
        default:
            throw SafetensorsError.unsupportedDType(file: path, tensor: name, dtype: e.dtype.rawValue, expected: "F32, F16 or BF16")
        }
    }

    /// Drops the mapped pages that lie wholly inside [start, start + bytes) once their data has
    /// been converted, so loading an F16 checkpoint holds the fp32 result plus little more than
    /// one tensor of the file (the pages come back from the file if read again).
    private func release(_ start: UnsafeRawPointer, bytes: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let first = (Int(bitPattern: start) + page - 1) / page * page
        let end = (Int(bitPattern: start) + bytes) / page * page
        guard end > first, let p = UnsafeMutableRawPointer(bitPattern: first) else { return }
        madvise(p, end - first, MADV_DONTNEED)
    }

    /// An integer tensor (I64 or I32), e.g. token ids or timesteps.
    public func integers(_ name: String) throws -> [Int] {
        let e = try entry(name)
        let src = UnsafeRawPointer(mapping! + dataStart + e.begin)
        switch e.dtype {
        case .I64: return (0..<e.elementCount).map { Int(Int64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))) }
        case .I32: return (0..<e.elementCount).map { Int(Int32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) }
        default:
            throw SafetensorsError.unsupportedDType(file: path, tensor: name, dtype: e.dtype.rawValue, expected: "I64 or I32")
        }
    }

    /// A copy of a tensor's bytes, as stored (a copy, so it stays valid after the file is closed).
    public func rawBytes(_ name: String) throws -> [UInt8] {
        let e = try entry(name)
        return Array(UnsafeRawBufferPointer(start: mapping! + dataStart + e.begin, count: e.end - e.begin))
    }

    // MARK: - Header validation

    struct Header {
        let metadata: [String: String]
        let entries: [SafetensorsEntry]
        let dataStart: Int
    }

    static func parseHeader(_ base: UnsafeRawPointer, size: Int, file: String) throws -> Header {
        let n = UInt64(littleEndian: base.loadUnaligned(as: UInt64.self))
        guard n >= 2, n <= UInt64(maxHeaderBytes), n <= UInt64(size - 8) else {
            throw SafetensorsError.headerLength(file: file, length: n, fileSize: size)
        }
        let headerBytes = Data(bytes: base + 8, count: Int(n))
        guard headerBytes.first == UInt8(ascii: "{") else {
            throw SafetensorsError.invalidHeader(file: file, reason: "does not start with '{'")
        }
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerBytes)
        } catch {
            throw SafetensorsError.invalidHeader(file: file, reason: "malformed JSON (\(error.localizedDescription))")
        }
        guard let object = json as? [String: Any] else {
            throw SafetensorsError.invalidHeader(file: file, reason: "not a JSON object")
        }
        let dataStart = 8 + Int(n)
        let dataSize = size - dataStart
        var metadata: [String: String] = [:]
        var entries: [SafetensorsEntry] = []
        for (name, value) in object {
            if name == "__metadata__" {
                if value is NSNull { continue }  // the reference parser accepts null
                guard let m = value as? [String: Any] else {
                    throw SafetensorsError.invalidHeader(file: file, reason: "__metadata__ is not an object")
                }
                for (k, v) in m {
                    guard let s = v as? String else {
                        throw SafetensorsError.invalidHeader(file: file, reason: "__metadata__ value for '\(k)' is not a string")
                    }
                    metadata[k] = s
                }
                continue
            }
            entries.append(try parseEntry(name, value, file: file, dataSize: dataSize))
        }
        entries.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        var covered = 0
        var last = ""
        for e in entries {
            if e.begin < covered { throw SafetensorsError.overlap(file: file, tensor: e.name, other: last) }
            if e.begin > covered {
                throw SafetensorsError.invalidEntry(file: file, tensor: e.name,
                                                    reason: "data starts at \(e.begin) but the previous tensor ends at \(covered) (hole in the data section)")
            }
            covered = e.end
            if e.end > e.begin { last = e.name }
        }
        if covered != dataSize {
            throw SafetensorsError.trailingBytes(file: file, dataEnd: covered, dataSize: dataSize)
        }
        return Header(metadata: metadata, entries: entries, dataStart: dataStart)
    }

    private static func parseEntry(_ name: String, _ value: Any, file: String, dataSize: Int) throws -> SafetensorsEntry {
        func bad(_ reason: String) -> SafetensorsError { .invalidEntry(file: file, tensor: name, reason: reason) }
        guard let dict = value as? [String: Any] else { throw bad("entry is not an object") }
        guard let dtypeName = dict["dtype"] as? String else { throw bad("missing string field 'dtype'") }
        guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
            throw SafetensorsError.unknownDType(file: file, tensor: name, dtype: dtypeName)
        }
        guard let shapeAny = dict["shape"] as? [Any] else { throw bad("missing array field 'shape'") }
        let shape = try shapeAny.map { v -> Int in
            guard let i = exactInteger(v), i >= 0 else { throw bad("shape \(shapeAny) has a non-integer or negative dimension") }
            return i
        }
        guard let offsets = dict["data_offsets"] as? [Any], offsets.count == 2,
              let begin = exactInteger(offsets[0]), let end = exactInteger(offsets[1]) else {
            throw bad("'data_offsets' must be two integers")
        }
        guard begin <= end else { throw bad("data_offsets [\(begin), \(end)] end before they begin") }
        guard begin >= 0, end <= dataSize else {
            throw SafetensorsError.offsetsOutOfRange(file: file, tensor: name, begin: begin, end: end, dataSize: dataSize)
        }
        var elements = 1
        for d in shape {
            let (p, overflow) = elements.multipliedReportingOverflow(by: d)
            guard !overflow, p <= Int.max / 64 else { throw bad("shape \(shape) is too large") }
            elements = p
        }
        let bits = elements * dtype.bits
        let expected = (bits + 7) / 8
        guard bits % 8 == 0, expected == end - begin else {
            throw SafetensorsError.sizeMismatch(file: file, tensor: name, shape: shape, dtype: dtypeName,
                                                expectedBytes: expected, actualBytes: end - begin)
        }
        return SafetensorsEntry(name: name, dtype: dtype, shape: shape, begin: begin, end: end)
    }

    /// A JSON integer literal that fits in Int: not a boolean (objCType "c") and not written as a
    /// fraction or exponent (objCType "d"/"f"), as the reference parser requires.
    private static func exactInteger(_ v: Any) -> Int? {
        guard let n = v as? NSNumber, "qlisQLIS".contains(String(cString: n.objCType)) else { return nil }
        return v as? Int
    }
}
