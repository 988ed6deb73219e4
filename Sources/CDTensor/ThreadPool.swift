#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CDNNL
import Foundation
import Synchronization

/// The process's compute threads: an OpenMP team of `threadCount` (libgomp's, through
/// `GOMP_parallel`), the calling thread being one of them.
///
/// oneDNN, which runs every GEMM (`BLAS.gemm`), uses the same libgomp threads, so our parallel
/// loops and its GEMMs share one set of threads: the cores are never oversubscribed, and a loop
/// that follows a GEMM finds the team's threads still spinning instead of asleep.
///
/// `parallelFor` hands out task indices dynamically and blocks until all are done, so the body may
/// capture local state without escaping. Calls made from inside a task, or while another thread is
/// already using the pool, run serially on the caller instead of deadlocking or oversubscribing;
/// oneDNN calls hold the pool the same way (`withTeam`).
public final class ThreadPool: @unchecked Sendable {
    /// The process's pool. Creating it also sets OpenBLAS (LAPACK) to the same thread count.
    public static let shared: ThreadPool = {
        let pool = ThreadPool(threadCount: ThreadPool.defaultThreadCount)
        BLAS.setThreads(pool.threadCount)
        return pool
    }()

    /// CPUs this process may use (Foundation reads the affinity mask and cgroup quota, so
    /// containers and `taskset` are respected), or `CD_NUM_THREADS` when set.
    public static var defaultThreadCount: Int {
        if let s = ProcessInfo.processInfo.environment["CD_NUM_THREADS"], let n = Int(s), n > 0 { return n }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }

    public let threadCount: Int
    private let inUse = Atomic<Bool>(false)

    public init(threadCount: Int) {
        self.threadCount = max(1, threadCount)
    }

    /// Runs `body(task, worker)` for every task in `0..<tasks`; `worker` is in `0..<threadCount`
    /// and no two tasks run at once with the same `worker`, so per-worker scratch needs no lock.
    public func parallelFor(_ tasks: Int, _ body: (_ task: Int, _ worker: Int) -> Void) {
        if tasks <= 0 { return }
        guard tasks > 1, claim() else {
            for t in 0..<tasks { body(t, 0) }
            return
        }
        defer { inUse.store(false, ordering: .releasing) }
        withoutActuallyEscaping(body) { escapable in
            let job = Job(body: escapable, count: tasks)
            // Returns after every team thread has left `Job.run`; `job` (and with it the body) is
            // released at the end of this scope, before `withoutActuallyEscaping` checks it.
            withExtendedLifetime(job) {
                GOMP_parallel({ raw in Job.run(raw!) }, Unmanaged.passUnretained(job).toOpaque(),
                              UInt32(min(threadCount, tasks)), 0)
            }
        }
    }

    /// Runs `body(threads)` holding the pool when it is free: `threads` is `threadCount` then, and 1
    /// inside a task or while another thread holds the pool. For library calls that start threads
    /// of their own (oneDNN's OpenMP teams), so two calling threads never run two full teams.
    public func withTeam<R>(_ body: (_ threads: Int) -> R) -> R {
        guard claim() else { return body(1) }
        defer { inUse.store(false, ordering: .releasing) }
        return body(threadCount)
    }

    /// Takes the pool for a multi-threaded section; false with one thread, inside a task, or while
    /// another thread holds it. The caller releases `inUse` when done.
    private func claim() -> Bool {
        threadCount > 1 && !ThreadPool.isInsideTask
            && inUse.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
    }

    /// Splits `0..<total` into contiguous ranges of at least `grain` items (a few per thread for
    /// balance) and runs them in parallel.
    public func parallelRanges(_ total: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
        if total <= 0 { return }
        let maxChunks = max(1, total / max(grain, 1))
        let chunks = min(maxChunks, threadCount * 4)
        if chunks <= 1 { body(0..<total); return }
        parallelFor(chunks) { c, _ in
            body((total * c / chunks)..<(total * (c + 1) / chunks))
        }
    }

    /// One `parallelFor`: its body and the next unclaimed task index, shared by the team.
    private final class Job: @unchecked Sendable {
        let body: (Int, Int) -> Void
        let count: Int
        let next = Atomic<Int>(0)
        init(body: @escaping (Int, Int) -> Void, count: Int) { self.body = body; self.count = count }

        /// Run by each team thread (thread 0 is the caller).
        static func run(_ raw: UnsafeMutableRawPointer) {
            let job = Unmanaged<Job>.fromOpaque(raw).takeUnretainedValue()
            let worker = Int(omp_get_thread_num())
            ThreadPool.isInsideTask = true
            defer { ThreadPool.isInsideTask = false }
            while true {
                let t = job.next.wrappingAdd(1, ordering: .relaxed).oldValue
                if t >= job.count { return }
                job.body(t, worker)
            }
        }
    }

    private static let insideKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    static var isInsideTask: Bool {
        get { pthread_getspecific(insideKey) != nil }
        set { pthread_setspecific(insideKey, newValue ? UnsafeRawPointer(bitPattern: 1) : nil) }
    }
}
