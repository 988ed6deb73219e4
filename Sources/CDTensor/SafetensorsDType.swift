/// The element types of the safetensors format (`safetensors/src/tensor.rs` `Dtype`).
public enum SafetensorsDType: String, Sendable, CaseIterable {
    case BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ
    case I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64
    case F4, F6_E2M3, F6_E3M2

    /// Bits per element (sub-byte types pack several per byte).
    public var bits: Int {
        switch self {
        case .F4: return 4
        case .F6_E2M3, .F6_E3M2: return 6
        case .BOOL, .U8, .I8, .F8_E5M2, .F8_E4M3, .F8_E8M0, .F8_E4M3FNUZ, .F8_E5M2FNUZ: return 8
        case .I16, .U16, .F16, .BF16: return 16
        case .I32, .U32, .F32: return 32
        case .C64, .F64, .I64, .U64: return 64
        }
    }

    /// Types read as fp32 tensors.
    public var isFloatingPointReadable: Bool { self == .F32 || self == .F16 || self == .BF16 }
}

/// fp16/bf16 ⇄ fp32 conversions used by the reader and writer.
enum HalfPrecision {
    @inline(__always) static func widenF16(_ bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }
    @inline(__always) static func narrowF16(_ x: Float) -> UInt16 { Float16(x).bitPattern }
    @inline(__always) static func widenBF16(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    /// Round to nearest even, as `torch.Tensor.to(torch.bfloat16)`; NaN stays NaN.
    @inline(__always) static func narrowBF16(_ x: Float) -> UInt16 {
        if x.isNaN { return 0x7FC0 }
        let b = x.bitPattern
        let rounded = b &+ 0x7FFF &+ ((b >> 16) & 1)
        return UInt16(rounded >> 16)
    }
}
