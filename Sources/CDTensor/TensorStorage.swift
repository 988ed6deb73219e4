#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// A block of fp32 memory that tensors view. Either owned (64-byte aligned, freed on deinit) or
/// borrowed from something that outlives it (an `Arena`, a memory-mapped file), which it keeps alive.
public final class TensorStorage: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let capacity: Int
    private let owned: Bool
    private let keepAlive: AnyObject?
    private let frozenFlag = Atomic<Bool>(false)

    /// Set for weights that no longer change (a model's frozen parameters): kernels may then keep
    /// derived copies of them, such as the bf16 blocked weights of `ComputePrecision.bf16`.
    public var isFrozen: Bool { frozenFlag.load(ordering: .relaxed) }
    public func freeze() { frozenFlag.store(true, ordering: .relaxed) }

    /// Owned, zero-filled storage for `capacity` floats.
    public init(capacity: Int) {
        precondition(capacity >= 0, "negative tensor capacity \(capacity)")
        self.pointer = allocateAligned(floats: capacity)
        self.pointer.initialize(repeating: 0, count: capacity)
        self.capacity = capacity
        self.owned = true
        self.keepAlive = nil
    }

    /// Storage over memory that `owner` keeps valid for as long as this object lives.
    public init(borrowing pointer: UnsafeMutablePointer<Float>, capacity: Int, owner: AnyObject?) {
        self.pointer = pointer
        self.capacity = capacity
        self.owned = false
        self.keepAlive = owner
    }

    deinit {
        if owned { free(pointer) }
    }
}

/// 64-byte aligned (cache line, AVX-512 register) allocation; never returns nil for a valid size.
func allocateAligned(floats: Int) -> UnsafeMutablePointer<Float> {
    var raw: UnsafeMutableRawPointer?
    let bytes = max(64, floats * MemoryLayout<Float>.stride)
    let rc = posix_memalign(&raw, 64, bytes)
    guard rc == 0, let raw else {
        // Out of memory is not recoverable for a numeric kernel.
        preconditionFailure("posix_memalign(\(bytes) bytes) failed with \(rc)")
    }
    return raw.bindMemory(to: Float.self, capacity: max(16, floats))
}
