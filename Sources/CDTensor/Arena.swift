#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A bump allocator for activations and temporaries of one pass.
///
/// Allocation is a pointer bump inside large blocks; `reset()` releases everything at once and keeps
/// the blocks for the next pass, so a training step allocates nothing from the system after the
/// first one. Tensors from an arena are valid until the next `reset()` (or `rewind(to:)` below them).
public final class Arena: @unchecked Sendable {
    private var blocks: [(pointer: UnsafeMutablePointer<Float>, capacity: Int)] = []
    private var block = 0      // index of the block being filled
    private var used = 0       // floats used in that block
    private let blockFloats: Int
    public private(set) var peakFloats = 0

    /// `blockBytes` is the minimum block size; larger requests get a block of their own size.
    public init(blockBytes: Int = 64 << 20) {
        self.blockFloats = max(1024, blockBytes / MemoryLayout<Float>.stride)
    }

    deinit { for b in blocks { free(b.pointer) } }

    /// A position to `rewind(to:)` later.
    public struct Mark: Sendable { fileprivate let block: Int, used: Int }

    public var mark: Mark { Mark(block: block, used: used) }

    /// Floats handed out now (the sum over blocks up to the current one).
    public var floatsInUse: Int {
        blocks.prefix(block).reduce(0) { $0 + $1.capacity } + used
    }

    /// A tensor of `shape`; zero-filled unless `zeroed` is false.
    public func tensor(_ shape: [Int], zeroed: Bool = true) -> Tensor {
        let n = shape.reduce(1, *)
        let rounded = (n + 15) & ~15  // keep every tensor 64-byte aligned
        while block < blocks.count && used + rounded > blocks[block].capacity {
            block += 1
            used = 0
        }
        if block == blocks.count {
            let capacity = max(blockFloats, rounded)
            blocks.append((allocateAligned(floats: capacity), capacity))
            used = 0
        }
        let p = blocks[block].pointer + used
        used += rounded
        peakFloats = max(peakFloats, floatsInUse)
        if zeroed { p.initialize(repeating: 0, count: n) }
        return Tensor(storage: TensorStorage(borrowing: p, capacity: n, owner: self), shape: shape)
    }

    public func rewind(to mark: Mark) {
        precondition(mark.block < block || (mark.block == block && mark.used <= used), "rewind forward")
        block = mark.block
        used = mark.used
    }

    public func reset() { rewind(to: Mark(block: 0, used: 0)) }
}
