/// Everything that can be wrong with a safetensors file; each case names the file and, where it
/// applies, the tensor.
public enum SafetensorsError: Error, CustomStringConvertible, Equatable {
    case cannotOpen(file: String, reason: String)
    case truncated(file: String, size: Int)
    case headerLength(file: String, length: UInt64, fileSize: Int)
    case invalidHeader(file: String, reason: String)
    case invalidEntry(file: String, tensor: String, reason: String)
    case unknownDType(file: String, tensor: String, dtype: String)
    case unsupportedDType(file: String, tensor: String, dtype: String, expected: String)
    case sizeMismatch(file: String, tensor: String, shape: [Int], dtype: String, expectedBytes: Int, actualBytes: Int)
    case offsetsOutOfRange(file: String, tensor: String, begin: Int, end: Int, dataSize: Int)
    case overlap(file: String, tensor: String, other: String)
    case trailingBytes(file: String, dataEnd: Int, dataSize: Int)
    case missingTensor(file: String, tensor: String)
    case writeFailed(file: String, reason: String)

    public var description: String {
        switch self {
        case let .cannotOpen(f, r): return "\(f): cannot open safetensors file: \(r)"
        case let .truncated(f, s): return "\(f): file is \(s) bytes, too short for a safetensors header (8-byte length + JSON)"
        case let .headerLength(f, n, s):
            return "\(f): header length \(n) does not fit in a file of \(s) bytes (truncated or not a safetensors file)"
        case let .invalidHeader(f, r): return "\(f): header is not valid safetensors JSON: \(r)"
        case let .invalidEntry(f, t, r): return "\(f): tensor '\(t)': \(r)"
        case let .unknownDType(f, t, d): return "\(f): tensor '\(t)' has unknown dtype '\(d)'"
        case let .unsupportedDType(f, t, d, e): return "\(f): tensor '\(t)' has dtype \(d), expected \(e)"
        case let .sizeMismatch(f, t, shape, d, e, a):
            return "\(f): tensor '\(t)' of shape \(shape) and dtype \(d) needs \(e) bytes but its data_offsets span \(a)"
        case let .offsetsOutOfRange(f, t, b, e, s):
            return "\(f): tensor '\(t)' data_offsets [\(b), \(e)] are outside the data section of \(s) bytes"
        case let .overlap(f, t, o): return "\(f): tensor '\(t)' overlaps tensor '\(o)'"
        case let .trailingBytes(f, end, size):
            return "\(f): tensors end at byte \(end) of a \(size)-byte data section (extra bytes: the file is not what its header describes)"
        case let .missingTensor(f, t): return "\(f): no tensor named '\(t)'"
        case let .writeFailed(f, r): return "\(f): cannot write safetensors file: \(r)"
        }
    }
}
