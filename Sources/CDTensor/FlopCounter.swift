import Synchronization

/// Counts the floating-point work of the GEMM-based kernels (1 FLOP = one multiply or one add),
/// so benchmarks report FLOP/s from what the code actually did rather than from a formula.
/// Counting is off unless a benchmark turns it on; when off it costs one relaxed load per call.
public enum FlopCounter {
    public enum Kind: Int, CaseIterable, Sendable {
        case conv, matmul, attention
        public var name: String { ["conv", "matmul", "attention"][rawValue] }
    }

    private static let enabled = Atomic<Bool>(false)
    private static let counts = Mutex([Double](repeating: 0, count: Kind.allCases.count))

    public static var isEnabled: Bool {
        get { enabled.load(ordering: .relaxed) }
        set { enabled.store(newValue, ordering: .relaxed) }
    }

    @inline(__always) static func add(_ kind: Kind, _ flops: Double) {
        guard enabled.load(ordering: .relaxed) else { return }
        counts.withLock { $0[kind.rawValue] += flops }
    }

    /// FLOPs per kind since the last reset.
    public static var totals: [Kind: Double] {
        counts.withLock { c in Dictionary(uniqueKeysWithValues: Kind.allCases.map { ($0, c[$0.rawValue]) }) }
    }

    public static func reset() { counts.withLock { $0 = [Double](repeating: 0, count: Kind.allCases.count) } }
}
