#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CDNNL
import Synchronization

/// Thread control and the primitive plumbing shared by `OneDNNConvolution` and `OneDNNMatmul`.
///
/// oneDNN (Debian's build) runs on OpenMP, whose thread count is a per-thread setting, and each
/// thread that calls it gets its own team. So that the process never runs more compute threads than
/// `ThreadPool.shared.threadCount`, a call runs multi-threaded only while it holds the pool
/// (`ThreadPool.withTeam`): from inside a pool task, or while another thread (the daemon's sampler
/// beside training) holds it, it runs on one thread.
enum OneDNN {
    /// Runs `body` with the calling thread's OpenMP count set to the threads it may use.
    @inline(__always)
    static func withThreads<R>(_ body: (_ threads: Int) -> R) -> R {
        ThreadPool.shared.withTeam { threads in
            if omp_get_max_threads() != Int32(threads) { omp_set_num_threads(Int32(threads)) }
            return body(threads)
        }
    }

    /// Primitives built once per key and kept; a nil entry records that oneDNN has no JIT kernel
    /// for that key (asked once). Emptied when it reaches `maximumPlans` (a daemon sampling at
    /// many sizes); plans in use stay alive with their callers.
    final class PlanCache<Key: Hashable & Sendable, Plan: AnyObject & Sendable>: Sendable {
        static var maximumPlans: Int { 256 }
        private let plans = Mutex<[Key: Plan?]>([:])

        func plan(_ key: Key, make: () -> Plan?) -> Plan? {
            if let known = plans.withLock({ $0[key] }) { return known }
            // Made outside the lock (JIT compilation takes milliseconds); a thread that raced us
            // may have inserted its own, which is just as good.
            let made = make()
            plans.withLock { cache in
                if cache.count >= Self.maximumPlans { cache.removeAll() }
                cache[key] = .some(made)
            }
            return made
        }
    }

    /// oneDNN engines may be used from any thread.
    nonisolated(unsafe) static let engine: dnnl_engine_t? = {
        var e: dnnl_engine_t?
        return dnnl_engine_create(&e, dnnl_cpu, 0) == dnnl_success ? e : nil
    }()

    /// A primitive and the scratchpad one execution needs. The scratchpad is ours (oneDNN's own
    /// belongs to the primitive), so two threads may run the same primitive at once: training and
    /// sampling in the daemon.
    struct Step {
        let primitive: dnnl_primitive_t
        let scratchpad: dnnl_memory_desc_t

        init?(_ pd: dnnl_primitive_desc_t) {
            var p: dnnl_primitive_t?
            guard dnnl_primitive_create(&p, pd) == dnnl_success, let p else { return nil }
            primitive = p
            // A zero descriptor (size 0) when the primitive needs none.
            scratchpad = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0)?.pointee ?? dnnl_memory_desc_t()
        }
    }

    /// Attributes with a user-managed scratchpad and, with `accumulate`, a sum post-op (the
    /// result is added to what the destination holds).
    static func attributes(accumulate: Bool) -> dnnl_primitive_attr_t? {
        var attr: dnnl_primitive_attr_t?
        guard dnnl_primitive_attr_create(&attr) == dnnl_success, let attr else { return nil }
        var ok = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success
        if accumulate && ok {
            var ops: dnnl_post_ops_t?
            ok = dnnl_post_ops_create(&ops) == dnnl_success && dnnl_post_ops_append_sum(ops, 1) == dnnl_success
                && dnnl_primitive_attr_set_post_ops(attr, ops) == dnnl_success
            if let ops { dnnl_post_ops_destroy(ops) }
        }
        if ok { return attr }
        dnnl_primitive_attr_destroy(attr)
        return nil
    }

    /// A reorder from `from` to `to` (layout and data type); with `accumulate` it adds into `to`.
    static func reorder(_ from: inout dnnl_memory_desc_t, _ to: inout dnnl_memory_desc_t, accumulate: Bool,
                        _ engine: dnnl_engine_t) -> Step? {
        guard let attr = attributes(accumulate: accumulate) else { return nil }
        defer { dnnl_primitive_attr_destroy(attr) }
        var rpd: dnnl_primitive_desc_t?
        guard dnnl_reorder_primitive_desc_create(&rpd, &from, engine, &to, engine, attr) == dnnl_success, let rpd else { return nil }
        defer { dnnl_primitive_desc_destroy(rpd) }
        return Step(rpd)
    }

    /// The implementation oneDNN picked must be a JIT kernel: "ref" is a slow loop and "gemm"
    /// (for convolutions) is im2col again.
    static func isJIT(_ pd: dnnl_primitive_desc_t) -> Bool {
        var info: UnsafePointer<CChar>?
        guard dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &info) == dnnl_success, let info else { return false }
        let name = String(cString: info)
        return name.contains("jit") && !name.contains("gemm") || name.contains("brg")
    }

    /// One call's stream, memory objects and buffers, released by `close`. Buffers come from the
    /// thread's scratch arena up to `arenaBudget` floats in all and are allocated beyond it (the
    /// VAE's 128-channel planes at 512 px: 128 MiB each), so that the arena, which only grows,
    /// does not keep them for the rest of the process.
    final class Call {
        let engine: dnnl_engine_t
        private let arena: Arena
        private let arenaBudget: Int
        private var fromArena = 0
        private var owned: [UnsafeMutablePointer<Float>] = []
        private var memories: [dnnl_memory_t] = []
        private var stream: dnnl_stream_t?
        private var scratchpad: UnsafeMutableRawPointer?

        init(engine: dnnl_engine_t, arena: Arena, arenaBudget: Int) {
            self.engine = engine; self.arena = arena; self.arenaBudget = arenaBudget
            check(dnnl_stream_create(&stream, engine, UInt32(dnnl_stream_default_flags.rawValue)), "stream")
        }

        /// A buffer for `d`, valid until `close`.
        func buffer(_ d: inout dnnl_memory_desc_t) -> UnsafeMutableRawPointer {
            let floats = (dnnl_memory_desc_get_size(&d) + 3) / 4
            guard fromArena + floats <= arenaBudget else {
                owned.append(allocateAligned(floats: floats))
                return UnsafeMutableRawPointer(owned.last!)
            }
            fromArena += floats
            return UnsafeMutableRawPointer(arena.tensor([floats], zeroed: false).pointer)
        }

        /// A memory object over `handle`, destroyed by `close`.
        func memory(_ d: inout dnnl_memory_desc_t, _ handle: UnsafeMutableRawPointer) -> dnnl_memory_t? {
            var m: dnnl_memory_t?
            check(dnnl_memory_create(&m, &d, engine, handle), "memory")
            if let m { memories.append(m) }
            return m
        }

        func memory(_ d: inout dnnl_memory_desc_t, _ handle: UnsafeMutablePointer<Float>) -> dnnl_memory_t? {
            memory(&d, UnsafeMutableRawPointer(handle))
        }

        /// Steps run one after another on the stream, so one scratchpad buffer, the largest any of
        /// `steps` asks for, serves them all.
        func reserveScratchpad(for steps: [Step]) {
            var largest = steps.map(\.scratchpad).max { a, b in
                var (a, b) = (a, b)
                return dnnl_memory_desc_get_size(&a) < dnnl_memory_desc_get_size(&b)
            } ?? dnnl_memory_desc_t()
            scratchpad = dnnl_memory_desc_get_size(&largest) == 0 ? nil : buffer(&largest)
        }

        func execute(_ step: Step, _ args: [(Int32, dnnl_memory_t?)]) {
            var pad = step.scratchpad
            let padMemory = scratchpad.map { memory(&pad, $0) }
            let list = (args + (padMemory.map { [(DNNLArg.scratchpad, $0)] } ?? [])).map { dnnl_exec_arg_t(arg: $0.0, memory: $0.1) }
            check(dnnl_primitive_execute(step.primitive, stream, Int32(list.count), list), "execute")
        }

        /// Waits for the steps executed so far.
        func wait() { check(dnnl_stream_wait(stream), "stream wait") }

        /// Waits for the steps and releases everything the call made.
        func close() {
            wait()
            memories.forEach { dnnl_memory_destroy($0) }
            owned.forEach { free($0) }
            dnnl_stream_destroy(stream)
            memories = []; owned = []
        }
    }
}

/// Execution arguments (DNNL_ARG_*; their macros are aliases Swift does not import).
enum DNNLArg {
    static let src: Int32 = 1, from: Int32 = 1, dst: Int32 = 17, to: Int32 = 17
    static let weights: Int32 = 33, bias: Int32 = 41, diffSrc: Int32 = 129, diffDst: Int32 = 145, scratchpad: Int32 = 80
}

/// A failure after a primitive was built (out of memory inside oneDNN) is not recoverable here.
func check(_ status: dnnl_status_t, _ what: String) {
    precondition(status == dnnl_success, "oneDNN \(what) failed: status \(status.rawValue)")
}

/// A plain memory descriptor; false if oneDNN rejects it.
func describe(_ d: inout dnnl_memory_desc_t, _ dims: [Int64], _ tag: dnnl_format_tag_t,
              _ type: dnnl_data_type_t = dnnl_f32) -> Bool {
    dnnl_memory_desc_init_by_tag(&d, Int32(dims.count), dims, type, tag) == dnnl_success
}
