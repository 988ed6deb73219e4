import Foundation
import Testing
@testable import CDTensor
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Helpers

/// Runs `body` with the path of a fresh temporary directory, removed afterwards.
private func withTempDirectory(_ body: (String) throws -> Void) throws {
    var template = Array((NSTemporaryDirectory() + "/cd-safetensors-XXXXXX").utf8CString)
    let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    let dir = try #require(made.map { String(cString: $0) }, "mkdtemp failed")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try body(dir)
}

private func writeBytes(_ bytes: [UInt8], to path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

private func readBytes(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

private func directoryListing(_ dir: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
}

/// Little-endian bytes of integers (also used for raw F16/BF16 bit patterns).
private func le<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
    values.flatMap { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } }
}

private func f32Bytes(_ values: [Float]) -> [UInt8] { le(values.map(\.bitPattern)) }

/// A raw safetensors file: 8-byte little-endian header length, header, data. `pad` right-pads the
/// header with spaces to a multiple of 8; `length` overrides the stored header length.
private func rawFile(_ header: String, pad: Bool = false, length: UInt64? = nil, data: [UInt8] = []) -> [UInt8] {
    var h = Array(header.utf8)
    while pad && h.count % 8 != 0 { h.append(0x20) }
    return le([length ?? UInt64(h.count)]) + h + data
}

/// `"name":{...}` with the given fields as raw JSON text; a nil field is left out.
private func entry(_ name: String, dtype: String? = "\"F32\"", shape: String? = "[2]",
                   offsets: String? = "[0,8]") -> String {
    let fields = [dtype.map { "\"dtype\":\($0)" }, shape.map { "\"shape\":\($0)" },
                  offsets.map { "\"data_offsets\":\($0)" }].compactMap { $0 }
    return "\"\(name)\":{\(fields.joined(separator: ","))}"
}

private func header(_ items: String...) -> String { "{" + items.joined(separator: ",") + "}" }

/// The stored header length N of a serialized file.
private func headerLength(_ bytes: [UInt8]) -> Int {
    Int(bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
}

/// `x` rounded to bf16, nearest with ties to even, found by comparing the exact distances to the
/// two neighbouring bf16 values (independent of the bit trick in `HalfPrecision.narrowBF16`).
private func referenceBF16(_ x: Float) -> Float {
    let lo = Float(bitPattern: x.bitPattern & 0xFFFF_0000)              // toward zero
    let hi = Float(bitPattern: (x.bitPattern & 0xFFFF_0000) &+ 0x1_0000) // away from zero
    // Past the largest finite bf16, IEEE rounding treats the next value up as 2^128.
    let hiValue = hi.isInfinite ? (x < 0 ? -0x1p128 : 0x1p128) : Double(hi)
    let dLo = abs(Double(x) - Double(lo)), dHi = abs(hiValue - Double(x))
    if dLo != dHi { return dLo < dHi ? lo : hi }
    return (lo.bitPattern >> 16) & 1 == 0 ? lo : hi
}

/// Expects `got` to hold exactly the bit patterns of `want` (so -0 and NaN are compared too).
private func expectBits(_ got: Tensor, _ want: [Float], _ what: String,
                        sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(got.count == want.count, "\(what): \(got.count) values, expected \(want.count)", sourceLocation: sourceLocation)
    for (i, (g, w)) in zip(got.array, want).enumerated() where g.bitPattern != w.bitPattern {
        Issue.record("\(what)[\(i)] is \(g) (0x\(String(g.bitPattern, radix: 16))), expected \(w) (0x\(String(w.bitPattern, radix: 16)))",
                     sourceLocation: sourceLocation)
        return
    }
}

extension SafetensorsError {
    /// The case, without its associated values.
    enum Kind: Sendable {
        case cannotOpen, truncated, headerLength, invalidHeader, invalidEntry, unknownDType
        case unsupportedDType, sizeMismatch, offsetsOutOfRange, overlap, trailingBytes, missingTensor, writeFailed
    }

    var kind: Kind {
        switch self {
        case .cannotOpen: .cannotOpen
        case .truncated: .truncated
        case .headerLength: .headerLength
        case .invalidHeader: .invalidHeader
        case .invalidEntry: .invalidEntry
        case .unknownDType: .unknownDType
        case .unsupportedDType: .unsupportedDType
        case .sizeMismatch: .sizeMismatch
        case .offsetsOutOfRange: .offsetsOutOfRange
        case .overlap: .overlap
        case .trailingBytes: .trailingBytes
        case .missingTensor: .missingTensor
        case .writeFailed: .writeFailed
        }
    }
}

/// Expects `body` to throw a SafetensorsError of `kind` whose description names `file`, `tensor`
/// (quoted, where given) and every string in `mentions`.
private func expectError(_ kind: SafetensorsError.Kind, file: String, tensor: String? = nil, mentions: [String] = [],
                         sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    let error = #expect(throws: SafetensorsError.self, sourceLocation: sourceLocation) { try body() }
    guard let error else { return }
    #expect(error.kind == kind, "\(error)", sourceLocation: sourceLocation)
    let text = error.description
    #expect(text.contains(file), "description does not name the file: \(text)", sourceLocation: sourceLocation)
    for word in (tensor.map { ["'\($0)'"] } ?? []) + mentions {
        #expect(text.contains(word), "description does not mention \(word): \(text)", sourceLocation: sourceLocation)
    }
}

// MARK: - Tests

@Suite("Safetensors")
struct SafetensorsTests {
    // MARK: Round trip through SafetensorsWriter

    @Test func roundTripF32F16BF16() throws {
        var rng = SeededRandom(seed: 0x5AFE)
        let f32Values: [Float] = [1.5, -0.0, .infinity, -.infinity, .nan, .leastNonzeroMagnitude,
                                  .greatestFiniteMagnitude, 0.1, -3.0e-20, 123_456.79]
        let f32Random = (0..<37).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) }

        // Largest finite, smallest normal, smallest subnormal, 1 + ulp, the F16 nearest 1/3.
        let f16Exact: [Float] = [0.5, -2, 65504, -65504, 0x1p-14, 0x1p-24, 1 + 0x1p-10, -0.0, .infinity, 0.333251953125]
        #expect(f16Exact.allSatisfy { Float(Float16($0)) == $0 }, "test data not representable in F16")
        let f16Arbitrary: [Float] = [0.1, 1.0 / 3.0, 70_000, -1e-9, 0x1p-25 * 1.5, 2049, 2051]
            + (0..<40).map { _ in rng.uniform(-1000, 1000) }

        let bf16Exact: [Float] = (0..<40).map { _ in
            let x = Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()) & 0xFFFF_0000)
            return x.isNaN ? 1.0 : x
        } + [-0.0, .infinity, -.infinity, 0x1p-133]
        let bf16Arbitrary: [Float] = [
            Float(bitPattern: 0x3F80_8000), // tie, even below: stays 1.0
            Float(bitPattern: 0x3F81_8000), // tie, odd below: rounds up to 0x3F82
            Float(bitPattern: 0xBF81_8000), // same, negative
            Float(bitPattern: 0x3F80_8001), // just above the tie: rounds up
            Float(bitPattern: 0x3F80_7FFF), // just below the tie: rounds down
            Float(bitPattern: 0x7F7F_8000), // tie at the top: overflows to +inf
            Float(bitPattern: 0x7F7F_7FFF), // just below: largest finite bf16
            Float(bitPattern: 0x0000_8001), // subnormal
        ] + (0..<60).map { _ in
            let x = Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))
            return x.isFinite ? x : 2.5
        }

        var writer = SafetensorsWriter(metadata: ["format": "pt", "note": "round trip"])
        writer.add("z.f16.round", Tensor(f16Arbitrary, shape: [f16Arbitrary.count]), as: .f16)
        writer.add("scalar", Tensor([3.25], shape: []))
        writer.add("b.bf16.exact", Tensor(bf16Exact, shape: [4, bf16Exact.count / 4]), as: .bf16)
        writer.add("f32.special", Tensor(f32Values, shape: [2, 5]))
        writer.add("a.f16.exact", Tensor(f16Exact, shape: [5, 2]), as: .f16)
        writer.add("empty", Tensor(zeros: [0, 3]))
        writer.add("c.bf16.round", Tensor(bf16Arbitrary, shape: [bf16Arbitrary.count]), as: .bf16)
        writer.add("f32.random", Tensor(f32Random, shape: [37, 1, 1]))
        writer.add("d.bf16.empty", Tensor(zeros: [0, 3]), as: .bf16)

        try withTempDirectory { dir in
            let path = dir + "/model.safetensors"
            try writer.write(to: path)
            let bytes = try readBytes(path)
            #expect(bytes == [UInt8](writer.serialized()))
            let file = try SafetensorsFile(path: path)

            #expect(file.metadata == ["format": "pt", "note": "round trip"])
            // Data order: F32 first, then the 16-bit types, each group by name.
            #expect(file.names == ["empty", "f32.random", "f32.special", "scalar",
                                   "a.f16.exact", "b.bf16.exact", "c.bf16.round", "d.bf16.empty", "z.f16.round"])
            let dtypes = file.entries.map(\.dtype)
            #expect(dtypes == [.F32, .F32, .F32, .F32, .F16, .BF16, .BF16, .BF16, .F16])

            // Layout: N a multiple of 8, ranges contiguous from 0 to the end of the file, each tensor
            // aligned in the file to its element size.
            let n = headerLength(bytes)
            #expect(n % 8 == 0, "header length \(n)")
            #expect(file.entries.first?.begin == 0)
            #expect(file.entries.last?.end == bytes.count - 8 - n)
            for (prev, next) in zip(file.entries, file.entries.dropFirst()) {
                #expect(next.begin == prev.end, "\(next.name) starts at \(next.begin), \(prev.name) ends at \(prev.end)")
            }
            for e in file.entries {
                #expect((8 + n + e.begin) % (e.dtype.bits / 8) == 0, "\(e.name) starts at file offset \(8 + n + e.begin)")
                #expect(e.end - e.begin == e.elementCount * e.dtype.bits / 8, "\(e.name)")
            }

            let shapes = Dictionary(uniqueKeysWithValues: file.entries.map { ($0.name, $0.shape) })
            #expect(shapes == ["empty": [0, 3], "f32.random": [37, 1, 1], "f32.special": [2, 5], "scalar": [],
                               "a.f16.exact": [5, 2], "b.bf16.exact": [4, 11], "c.bf16.round": [68],
                               "d.bf16.empty": [0, 3], "z.f16.round": [47]])
            for name in file.names {
                #expect(try file.tensor(name).shape == shapes[name], "\(name)")
            }

            expectBits(try file.tensor("f32.special"), f32Values, "f32.special")
            expectBits(try file.tensor("f32.random"), f32Random, "f32.random")
            expectBits(try file.tensor("scalar"), [3.25], "scalar")
            #expect(try file.tensor("empty").count == 0)
            #expect(try file.tensor("d.bf16.empty").count == 0)
            expectBits(try file.tensor("a.f16.exact"), f16Exact, "a.f16.exact")
            expectBits(try file.tensor("z.f16.round"), f16Arbitrary.map { Float(Float16($0)) }, "z.f16.round")
            expectBits(try file.tensor("b.bf16.exact"), bf16Exact, "b.bf16.exact")
            expectBits(try file.tensor("c.bf16.round"), bf16Arbitrary.map(referenceBF16), "c.bf16.round")
        }
    }

    @Test func bf16ReferenceRoundingSanity() {
        // The reference itself, on hand-checked cases, so a wrong reference cannot hide a wrong writer.
        #expect(referenceBF16(Float(bitPattern: 0x3F80_8000)).bitPattern == 0x3F80_0000)
        #expect(referenceBF16(Float(bitPattern: 0x3F81_8000)).bitPattern == 0x3F82_0000)
        #expect(referenceBF16(Float(bitPattern: 0x3F80_8001)).bitPattern == 0x3F81_0000)
        #expect(referenceBF16(Float(bitPattern: 0x7F7F_8000)) == .infinity)
        #expect(referenceBF16(Float(bitPattern: 0xFF7F_8000)) == -.infinity)
        #expect(referenceBF16(Float(bitPattern: 0x7F7F_7FFF)).bitPattern == 0x7F7F_0000)
    }

    @Test func writerNaNStaysNaN() throws {
        var writer = SafetensorsWriter()
        writer.add("h", Tensor([.nan, -.nan], shape: [2]), as: .f16)
        writer.add("b", Tensor([.nan, -.nan], shape: [2]), as: .bf16)
        try withTempDirectory { dir in
            let path = dir + "/nan.safetensors"
            try writer.write(to: path)
            let file = try SafetensorsFile(path: path)
            #expect(try file.tensor("h").array.allSatisfy(\.isNaN))
            #expect(try file.tensor("b").array.allSatisfy(\.isNaN))
        }
    }

    // MARK: Hand-built files

    /// The worked example of spec §7.1: c (I64 [1]), a.bias (F32 [3]), b.weight (F16 [2, 3]).
    private static let exampleHeader = header(
        "\"__metadata__\":{\"format\":\"pt\"}",
        entry("c", dtype: "\"I64\"", shape: "[1]", offsets: "[0,8]"),
        entry("a.bias", dtype: "\"F32\"", shape: "[3]", offsets: "[8,20]"),
        entry("b.weight", dtype: "\"F16\"", shape: "[2,3]", offsets: "[20,32]"))
    private static let exampleInteger: Int64 = -1_234_567_890_123
    private static let exampleBias: [Float] = [1.5, -2.25, 1e-3]
    /// 1, -2, 0.333251953125, 65504, 2^-24 (smallest subnormal), -0.
    private static let exampleHalfBits: [UInt16] = [0x3C00, 0xC000, 0x3555, 0x7BFF, 0x0001, 0x8000]
    private static let exampleHalfValues: [Float] = [1, -2, 0.333251953125, 65504, 0x1p-24, -0.0]
    private static let exampleData = le([exampleInteger]) + f32Bytes(exampleBias) + le(exampleHalfBits)

    /// Checks the three worked-example tensors in `file`.
    private func checkWorkedExample(_ file: SafetensorsFile) throws {
        #expect(file.metadata == ["format": "pt"])
        #expect(file.entries.prefix(3).map(\.name) == ["c", "a.bias", "b.weight"])
        #expect(try file.entry("c") == SafetensorsEntry(name: "c", dtype: .I64, shape: [1], begin: 0, end: 8))
        #expect(try file.entry("b.weight").shape == [2, 3])
        #expect(try file.integers("c") == [Int(Self.exampleInteger)])
        expectBits(try file.tensor("a.bias"), Self.exampleBias, "a.bias")
        let half = try file.tensor("b.weight")
        #expect(half.shape == [2, 3])
        expectBits(half, Self.exampleHalfValues, "b.weight")
        #expect(Array(try file.rawBytes("b.weight")) == le(Self.exampleHalfBits))
        expectError(.unsupportedDType, file: file.path, tensor: "c", mentions: ["I64"]) { _ = try file.tensor("c") }
        expectError(.unsupportedDType, file: file.path, tensor: "a.bias", mentions: ["F32"]) { _ = try file.integers("a.bias") }
    }

    @Test func readsSpecWorkedExample() throws {
        let bytes = rawFile(Self.exampleHeader, pad: true, data: Self.exampleData)
        #expect(headerLength(bytes) == 208, "spec §7.1 gives N = 208 for this header")
        try withTempDirectory { dir in
            let path = dir + "/example.safetensors"
            try writeBytes(bytes, to: path)
            let file = try SafetensorsFile(path: path)
            #expect(file.names == ["c", "a.bias", "b.weight"])
            try checkWorkedExample(file)
        }
    }

    @Test func readsRawBF16AndUnalignedF32() throws {
        // The worked example plus a BF16 tensor, header not padded: N = 269, so the F32 data sits at an
        // odd file offset and must be copied rather than viewed.
        let bf16Bits: [UInt16] = [0x3FC0, 0xC2F7, 0x0001, 0xFF80]
        let headerText = String(Self.exampleHeader.dropLast())
            + "," + entry("d.bf16", dtype: "\"BF16\"", shape: "[2,2]", offsets: "[32,40]") + "}"
        let bytes = rawFile(headerText, data: Self.exampleData + le(bf16Bits))
        #expect(headerLength(bytes) % 4 != 0)
        try withTempDirectory { dir in
            let path = dir + "/bf16.safetensors"
            try writeBytes(bytes, to: path)
            let file = try SafetensorsFile(path: path)
            #expect(file.names == ["c", "a.bias", "b.weight", "d.bf16"])
            try checkWorkedExample(file)
            let bf16 = try file.tensor("d.bf16")
            #expect(bf16.shape == [2, 2])
            expectBits(bf16, [1.5, -123.5, Float(bitPattern: 0x0001_0000), -.infinity], "d.bf16")
        }
    }

    @Test func readsI32AndOddHeaderPadding() throws {
        // I32 integers, and a header padded with spaces to a length that is not a multiple of 8.
        let text = header(entry("ids", dtype: "\"I32\"", shape: "[3]", offsets: "[0,12]")) + "   "
        try withTempDirectory { dir in
            let path = dir + "/ids.safetensors"
            try writeBytes(rawFile(text, data: le([Int32(-7), 0, Int32.max])), to: path)
            let file = try SafetensorsFile(path: path)
            #expect(try file.integers("ids") == [-7, 0, Int(Int32.max)])
            #expect(file.metadata.isEmpty)
        }
    }

    // MARK: Rejections

    struct Rejection: Sendable, CustomTestStringConvertible {
        let label: String
        let bytes: [UInt8]
        let kind: SafetensorsError.Kind
        let tensor: String?
        let mentions: [String]
        var testDescription: String { label }

        init(_ label: String, _ bytes: [UInt8], _ kind: SafetensorsError.Kind, tensor: String? = nil, mentions: [String] = []) {
            (self.label, self.bytes, self.kind, self.tensor, self.mentions) = (label, bytes, kind, tensor, mentions)
        }
    }

    /// A single F32 [2] tensor "a"; 8 bytes of data.
    private static let twoFloats = f32Bytes([1, 2])

    /// A valid file cut short by 3 bytes.
    private static var cutShort: [UInt8] {
        var writer = SafetensorsWriter(metadata: ["format": "pt"])
        writer.add("w", Tensor([1, 2, 3], shape: [3]))
        writer.add("h", Tensor([1, 2], shape: [2]), as: .f16)
        return Array([UInt8](writer.serialized()).dropLast(3))
    }

    static let rejections: [Rejection] = [
        Rejection("file shorter than 10 bytes", [8, 0, 0, 0, 0, 0, 0, 0, 0x7B], .truncated, mentions: ["9 bytes"]),
        Rejection("header length beyond the file", rawFile("{}", length: 1000), .headerLength, mentions: ["1000"]),
        Rejection("header length 0", rawFile("{}  ", length: 0), .headerLength),
        Rejection("header not starting with '{'", rawFile(" " + header(entry("a")), data: twoFloats), .invalidHeader),
        Rejection("malformed JSON", rawFile("{\"a\":{\"dtype\":", pad: true), .invalidHeader),
        Rejection("JSON array at top level", rawFile("[1, 2]  "), .invalidHeader),
        Rejection("__metadata__ with a number value",
                  rawFile(header("\"__metadata__\":{\"format\":\"pt\",\"step\":3}")), .invalidHeader, mentions: ["step"]),
        Rejection("__metadata__ not an object", rawFile(header("\"__metadata__\":[\"pt\"]")), .invalidHeader),
        Rejection("entry not an object", rawFile(header("\"x\":[1]")), .invalidEntry, tensor: "x"),
        Rejection("entry without dtype", rawFile(header(entry("bad.w", dtype: nil)), data: twoFloats),
                  .invalidEntry, tensor: "bad.w", mentions: ["dtype"]),
        Rejection("entry without shape", rawFile(header(entry("bad.w", shape: nil)), data: twoFloats),
                  .invalidEntry, tensor: "bad.w", mentions: ["shape"]),
        Rejection("entry without data_offsets", rawFile(header(entry("bad.w", offsets: nil)), data: twoFloats),
                  .invalidEntry, tensor: "bad.w", mentions: ["data_offsets"]),
        Rejection("negative dimension", rawFile(header(entry("neg", shape: "[-2]")), data: twoFloats),
                  .invalidEntry, tensor: "neg"),
        Rejection("fractional dimension", rawFile(header(entry("frac", shape: "[1.5]")), data: twoFloats),
                  .invalidEntry, tensor: "frac"),
        Rejection("dimension written as 2.0", rawFile(header(entry("dbl", shape: "[2.0]")), data: twoFloats),
                  .invalidEntry, tensor: "dbl"),
        Rejection("boolean dimension", rawFile(header(entry("flag", shape: "[true,2]")), data: twoFloats),
                  .invalidEntry, tensor: "flag"),
        Rejection("string dimension", rawFile(header(entry("str", shape: "[\"2\"]")), data: twoFloats),
                  .invalidEntry, tensor: "str"),
        Rejection("three data_offsets", rawFile(header(entry("off3", offsets: "[0,8,8]")), data: twoFloats),
                  .invalidEntry, tensor: "off3"),
        Rejection("fractional data_offsets", rawFile(header(entry("offf", offsets: "[0,7.5]")), data: twoFloats),
                  .invalidEntry, tensor: "offf"),
        Rejection("data_offsets begin > end",
                  rawFile(header(entry("rev", shape: "[1]", offsets: "[8,4]")), data: twoFloats),
                  .invalidEntry, tensor: "rev", mentions: ["[8, 4]", "end before they begin"]),
        Rejection("unknown dtype F17", rawFile(header(entry("odd", dtype: "\"F17\"")), data: twoFloats),
                  .unknownDType, tensor: "odd", mentions: ["F17"]),
        Rejection("shape and byte range disagree", rawFile(header(entry("big", shape: "[3]")), data: twoFloats),
                  .sizeMismatch, tensor: "big", mentions: ["12", "8"]),
        Rejection("sub-byte dtype with a partial byte", rawFile(header(entry("f4", dtype: "\"F4\"", shape: "[3]", offsets: "[0,2]")),
                                                            data: [0, 0]),
                  .sizeMismatch, tensor: "f4"),
        Rejection("end beyond the data section", rawFile(header(entry("far", offsets: "[8,16]")), data: twoFloats + [0, 0, 0]),
                  .offsetsOutOfRange, tensor: "far", mentions: ["11 bytes"]),
        Rejection("overlapping tensors",
                  rawFile(header(entry("first", offsets: "[0,8]"), entry("second", offsets: "[4,12]")),
                          data: twoFloats + twoFloats),
                  .overlap, tensor: "second", mentions: ["'first'"]),
        Rejection("hole before the first tensor", rawFile(header(entry("late", shape: "[1]", offsets: "[4,8]")), data: twoFloats),
                  .invalidEntry, tensor: "late"),
        Rejection("hole between tensors",
                  rawFile(header(entry("a", shape: "[1]", offsets: "[0,4]"), entry("b", shape: "[1]", offsets: "[8,12]")),
                          data: twoFloats + f32Bytes([3])),
                  .invalidEntry, tensor: "b"),
        Rejection("bytes after the last tensor", rawFile(header(entry("a")), data: twoFloats + [0, 0, 0, 0]),
                  .trailingBytes, mentions: ["12"]),
        Rejection("valid file with its last bytes cut off", cutShort, .offsetsOutOfRange, tensor: "h"),
    ]

    @Test(arguments: rejections)
    func rejects(_ c: Rejection) throws {
        try withTempDirectory { dir in
            let path = dir + "/case.safetensors"
            try writeBytes(c.bytes, to: path)
            expectError(c.kind, file: path, tensor: c.tensor,
                        mentions: c.mentions) { _ = try SafetensorsFile(path: path) }
        }
    }

    @Test func headerLengthLimitIs100MB() throws {
        // Sparse files whose header ("{" then zeros) is exactly at and just over the limit: at the limit
        // the length is accepted and the JSON is then found malformed; one byte over, the length is refused.
        try withTempDirectory { dir in
            for (length, kind) in [(UInt64(SafetensorsFile.maxHeaderBytes), SafetensorsError.Kind.invalidHeader),
                                   (UInt64(SafetensorsFile.maxHeaderBytes) + 1, .headerLength)] {
                let path = dir + "/huge-\(length).safetensors"
                try writeBytes(rawFile("{", length: length), to: path)
                #expect(truncate(path, off_t(length) + 100) == 0)
                expectError(kind, file: path) { _ = try SafetensorsFile(path: path) }
            }
        }
        #expect(SafetensorsFile.maxHeaderBytes == 100_000_000)
    }

    @Test func missingTensorLookup() throws {
        var writer = SafetensorsWriter()
        writer.add("present", Tensor([1], shape: [1]))
        try withTempDirectory { dir in
            let path = dir + "/one.safetensors"
            try writer.write(to: path)
            let file = try SafetensorsFile(path: path)
            #expect(file.contains("present"))
            #expect(!file.contains("absent.weight"))
            expectError(.missingTensor, file: path, tensor: "absent.weight") { _ = try file.tensor("absent.weight") }
            expectError(.missingTensor, file: path, tensor: "absent.weight") { _ = try file.entry("absent.weight") }
            expectError(.missingTensor, file: path, tensor: "absent.weight") { _ = try file.integers("absent.weight") }
            expectError(.missingTensor, file: path, tensor: "absent.weight") { _ = try file.rawBytes("absent.weight") }
        }
    }

    @Test func cannotOpenDirectoryOrMissingPath() throws {
        try withTempDirectory { dir in
            expectError(.cannotOpen, file: dir) { _ = try SafetensorsFile(path: dir) }
            let missing = dir + "/does-not-exist.safetensors"
            expectError(.cannotOpen, file: missing) { _ = try SafetensorsFile(path: missing) }
        }
    }

    // MARK: Writer atomicity

    @Test func writeIntoMissingDirectoryFailsAndLeavesNothing() throws {
        var writer = SafetensorsWriter()
        writer.add("w", Tensor([1, 2], shape: [2]))
        try withTempDirectory { dir in
            let path = dir + "/no-such-dir/out.safetensors"
            expectError(.writeFailed, file: path) { try writer.write(to: path) }
            let left = try directoryListing(dir)
            #expect(left.isEmpty, "left behind: \(left)")
        }
    }

    @Test func writeReplacesExistingFileCompletely() throws {
        var big = SafetensorsWriter(metadata: ["format": "pt"])
        big.add("old.a", Tensor(zeros: [1000]))
        big.add("old.b", Tensor(zeros: [3, 7]), as: .f16)
        var small = SafetensorsWriter()
        small.add("new", Tensor([4, 5, 6], shape: [3]), as: .bf16)
        try withTempDirectory { dir in
            let path = dir + "/model.safetensors"
            try big.write(to: path)
            try small.write(to: path)
            #expect(try readBytes(path) == [UInt8](small.serialized()))
            let file = try SafetensorsFile(path: path)
            #expect(file.names == ["new"])
            #expect(file.metadata.isEmpty)
            #expect(try file.tensor("new").array == [4, 5, 6])
            #expect(try directoryListing(dir) == ["model.safetensors"], "temporary files left behind")
        }
    }

    @Test func writeToADirectoryPathFailsAndLeavesNoTemporaryFile() throws {
        var writer = SafetensorsWriter()
        writer.add("w", Tensor([1], shape: [1]))
        try withTempDirectory { dir in
            let target = dir + "/taken"
            try FileManager.default.createDirectory(atPath: target + "/inside", withIntermediateDirectories: true)
            expectError(.writeFailed, file: target) { try writer.write(to: target) }
            #expect(try directoryListing(dir) == ["taken"])
            #expect(try directoryListing(target) == ["inside"])
        }
    }

    // MARK: JSON escaping

    @Test func namesAndMetadataWithCharactersThatNeedEscaping() throws {
        let names = ["quote\"d", "back\\slash", "new\nline", "tab\tand\rreturn", "ctrl\u{01}\u{1F}",
                     "ünïcødé.权重.🚀", "slash/and\u{7F}del", "{\"dtype\":\"F32\"}"]
        let metadata = ["key \"q\"": "value\\with\nnewline", "ü": "✓"]
        var writer = SafetensorsWriter(metadata: metadata)
        for (i, name) in names.enumerated() {
            writer.add(name, Tensor([Float(i), -Float(i)], shape: [2]), as: i % 2 == 0 ? .f32 : .f16)
        }
        let bytes = [UInt8](writer.serialized())
        let headerBytes = bytes[8..<(8 + headerLength(bytes))]
        #expect(!headerBytes.contains { $0 < 0x20 }, "raw control character in the JSON header")
        try withTempDirectory { dir in
            let path = dir + "/escaped.safetensors"
            try writer.write(to: path)
            let file = try SafetensorsFile(path: path)
            #expect(file.metadata == metadata)
            #expect(Set(file.names.map { Array($0.unicodeScalars) }) == Set(names.map { Array($0.unicodeScalars) }))
            for (i, name) in names.enumerated() {
                #expect(try file.tensor(name).array == [Float(i), -Float(i)], "\(name.debugDescription)")
            }
        }
    }

    @Test func jsonStringEscapes() {
        #expect(jsonString("a\"b\\c\nd\re\tf\u{01}g") == "\"a\\\"b\\\\c\\nd\\re\\tf\\u0001g\"")
        #expect(jsonString("é🚀") == "\"é🚀\"")
    }
}
