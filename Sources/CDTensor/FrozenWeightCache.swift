#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CDNNL
import Synchronization

/// Derived copies of frozen weights (`TensorStorage.isFrozen`) — the bf16 layouts oneDNN's kernels
/// read — keyed by the weight's storage, offset and the copy's layout (the bytes of its oneDNN
/// memory descriptor). One process-wide cache (`shared`), so that every `store` frees the copies of
/// all weights whose model was released, whichever plan made them. The storage is held weakly: a
/// released model's entry is noticed rather than matched by a new storage at the same address.
final class FrozenWeightCache: @unchecked Sendable {
    static let shared = FrozenWeightCache()

    private struct Key: Hashable {
        let storage: ObjectIdentifier
        let offset: Int
        let layout: [UInt8]

        init(_ weight: Tensor, _ layout: dnnl_memory_desc_t) {
            storage = ObjectIdentifier(weight.storage)
            offset = weight.offset
            self.layout = withUnsafeBytes(of: layout) { Array($0) }
        }
    }

    /// A buffer of a weight's copy. `filled` false: made for this call, which fills it and passes
    /// it to `store` (the cache frees every buffer it was given).
    final class Entry: @unchecked Sendable {
        weak var storage: TensorStorage?
        let data: UnsafeMutableRawPointer
        let filled: Bool
        init(storage: TensorStorage, data: UnsafeMutableRawPointer, filled: Bool) {
            self.storage = storage; self.data = data; self.filled = filled
        }
    }

    private let entries = Mutex<[Key: Entry]>([:])

    /// The stored copy of `weight` in `layout`, or a new buffer of that layout's size for the
    /// caller to fill and `store`.
    func entry(for weight: Tensor, layout: dnnl_memory_desc_t) -> Entry {
        if let hit = entries.withLock({ $0[Key(weight, layout)] }), hit.storage === weight.storage { return hit }
        var d = layout
        let floats = (dnnl_memory_desc_get_size(&d) + 3) / 4
        return Entry(storage: weight.storage, data: UnsafeMutableRawPointer(allocateAligned(floats: floats)), filled: false)
    }

    /// How many copies of `weight` (any layout) are kept.
    func copies(of weight: Tensor) -> Int {
        entries.withLock { $0.values.filter { $0.storage === weight.storage }.count }
    }

    /// Keeps a freshly filled buffer, unless another call stored one for the same weight first
    /// (that one may be in use: this one is freed instead), and returns the buffer kept: `fresh`
    /// must not be read after this call. Entries whose storage died are freed.
    @discardableResult
    func store(_ fresh: Entry, for weight: Tensor, layout: dnnl_memory_desc_t) -> UnsafeMutableRawPointer {
        let key = Key(weight, layout)
        let (kept, unused): (UnsafeMutableRawPointer, [UnsafeMutableRawPointer]) = entries.withLock { cache in
            var unused: [UnsafeMutableRawPointer] = []
            for (k, entry) in cache where entry.storage == nil {
                unused.append(entry.data)
                cache[k] = nil
            }
            if let existing = cache[key] {
                unused.append(fresh.data)
                return (existing.data, unused)
            }
            cache[key] = Entry(storage: weight.storage, data: fresh.data, filled: true)
            return (fresh.data, unused)
        }
        unused.forEach { free($0) }
        return kept
    }
}
