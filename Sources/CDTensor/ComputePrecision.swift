import CDNNL
import Synchronization

/// The arithmetic of the heavy products. `fp32` is the default and what the parity tests pin.
/// `bf16` (opt in) rounds the inputs and weights of every convolution and of every linear product
/// with a frozen weight (y = x·Wᵀ, dx = dy·W) to bfloat16 and accumulates and writes in fp32, on
/// oneDNN's AVX512_BF16 kernels, about 1.5–2× the fp32 throughput where the CPU has them.
/// Everything else stays fp32: attention, norms, activations, the loss, the optimizer, the trained
/// weights and their gradients (dW).
public enum ComputePrecision: String, Sendable, CaseIterable, Codable {
    case fp32, bf16

    private static let selected = Atomic<UInt8>(0)

    /// A precision for the code a task runs (`$scoped.withValue(.bf16) { … }`), over the
    /// process-wide one: tests compare both without changing what other tests see.
    @TaskLocal public static var scoped: ComputePrecision?

    /// The precision a convolution or frozen-weight matmul called now uses: the task's `scoped`
    /// one, else the process-wide selection (a job's, for training and sampling alike).
    public static var current: ComputePrecision { scoped ?? (selected.load(ordering: .relaxed) == 1 ? .bf16 : .fp32) }

    /// Selects `precision` process-wide from now on; bf16 where `bf16Supported` is false is
    /// refused, naming the reason.
    public static func select(_ precision: ComputePrecision) throws {
        if precision == .bf16 && !bf16Supported {
            throw PrecisionError.unsupported("bf16 compute needs a CPU with AVX512_BF16 (Intel Cooper Lake, Sapphire Rapids or later; AMD Zen 4 or later); this one has none, per oneDNN")
        }
        selected.store(precision == .bf16 ? 1 : 0, ordering: .relaxed)
    }

    /// Whether oneDNN runs bf16 natively here (its effective ISA includes AVX512_BF16: AMX does too).
    public static var bf16Supported: Bool {
        let isa = dnnl_get_effective_cpu_isa().rawValue, bf16 = dnnl_cpu_isa_avx512_core_bf16.rawValue
        return isa & bf16 == bf16
    }
}

public enum PrecisionError: Error, CustomStringConvertible, Equatable {
    case unsupported(String)
    public var description: String {
        switch self { case .unsupported(let why): why }
    }
}
