#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Synchronization

/// The process's compute threads: `threadCount - 1` parked workers plus the calling thread.
///
/// `parallelFor` hands out task indices dynamically and blocks until all are done, so the body may
/// capture local state without escaping. Calls made from inside a task, or while another thread is
/// already using the pool, run serially on the caller instead of deadlocking or oversubscribing.
/// OpenBLAS keeps threads of its own; `BLAS` sets its count to the same number and kernels never
/// run a multi-threaded GEMM from inside a task.
public final class ThreadPool: @unchecked Sendable {
    /// The process's pool. Creating it also sets OpenBLAS to the same thread count, so BLAS
    /// calls from the calling thread and our parallel loops use the same cores.
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
    private let core: Core
    private var threads: [pthread_t] = []
    private let inUse = Atomic<Bool>(false)

    public init(threadCount: Int) {
        self.threadCount = max(1, threadCount)
        core = Core()
        for worker in 1..<self.threadCount {
            // Workers hold only the core, so dropping the pool runs deinit, which stops them.
            let context = Unmanaged.passRetained(WorkerContext(core: core, worker: worker)).toOpaque()
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, { raw in
                let ctx = Unmanaged<WorkerContext>.fromOpaque(raw!).takeRetainedValue()
                ThreadPool.isInsideTask = true
                ctx.core.workerLoop(ctx.worker)
                return nil
            }, context)
            precondition(rc == 0, "pthread_create failed: \(rc)")
            threads.append(thread)
        }
    }

    deinit {
        core.shutDown()
        for t in threads { pthread_join(t, nil) }
    }

    /// Runs `body(task, worker)` for every task in `0..<tasks`; `worker` is in `0..<threadCount`
    /// and no two tasks run at once with the same `worker`, so per-worker scratch needs no lock.
    public func parallelFor(_ tasks: Int, _ body: (_ task: Int, _ worker: Int) -> Void) {
        if tasks <= 0 { return }
        if tasks == 1 || threadCount == 1 || ThreadPool.isInsideTask
            || !inUse.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged {
            for t in 0..<tasks { body(t, 0) }
            return
        }
        defer { inUse.store(false, ordering: .releasing) }
        withoutActuallyEscaping(body) { escapable in
            core.start(escapable, tasks: tasks, workers: threadCount - 1)
            ThreadPool.isInsideTask = true
            core.runTasks(escapable, worker: 0, count: tasks)
            ThreadPool.isInsideTask = false
            core.waitForWorkers()
        }
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

    /// The state workers share: one job at a time, announced by bumping `generation`. The mutex
    /// and conditions live at fixed heap addresses, as pthreads requires.
    private final class Core: @unchecked Sendable {
        private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        private let done = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        private var generation = 0
        private var pendingWorkers = 0
        private var shuttingDown = false
        private var body: ((Int, Int) -> Void)?
        private var taskCount = 0
        private let nextTask = Atomic<Int>(0)

        init() {
            pthread_mutex_init(mutex, nil)
            pthread_cond_init(wake, nil)
            pthread_cond_init(done, nil)
        }

        deinit {
            pthread_cond_destroy(done); pthread_cond_destroy(wake); pthread_mutex_destroy(mutex)
            done.deallocate(); wake.deallocate(); mutex.deallocate()
        }

        func start(_ job: @escaping (Int, Int) -> Void, tasks: Int, workers: Int) {
            pthread_mutex_lock(mutex)
            body = job
            taskCount = tasks
            nextTask.store(0, ordering: .relaxed)
            pendingWorkers = workers
            generation &+= 1
            pthread_cond_broadcast(wake)
            pthread_mutex_unlock(mutex)
        }

        /// Waits until every worker has finished this job and dropped its reference to the body
        /// (`withoutActuallyEscaping` checks that).
        func waitForWorkers() {
            pthread_mutex_lock(mutex)
            while pendingWorkers > 0 { pthread_cond_wait(done, mutex) }
            body = nil
            pthread_mutex_unlock(mutex)
        }

        func shutDown() {
            pthread_mutex_lock(mutex)
            shuttingDown = true
            pthread_cond_broadcast(wake)
            pthread_mutex_unlock(mutex)
        }

        func runTasks(_ body: (Int, Int) -> Void, worker: Int, count: Int) {
            while true {
                let t = nextTask.wrappingAdd(1, ordering: .relaxed).oldValue
                if t >= count { return }
                body(t, worker)
            }
        }

        func workerLoop(_ worker: Int) {
            var seen = 0
            while true {
                pthread_mutex_lock(mutex)
                while generation == seen && !shuttingDown { pthread_cond_wait(wake, mutex) }
                if shuttingDown { pthread_mutex_unlock(mutex); return }
                seen = generation
                pthread_mutex_unlock(mutex)

                runCurrentJob(worker: worker)

                pthread_mutex_lock(mutex)
                pendingWorkers -= 1
                if pendingWorkers == 0 { pthread_cond_signal(done) }
                pthread_mutex_unlock(mutex)
            }
        }

        /// A function of its own so that the worker's reference to the body is released before
        /// it reports done.
        private func runCurrentJob(worker: Int) {
            pthread_mutex_lock(mutex)
            let job = body
            let count = taskCount
            pthread_mutex_unlock(mutex)
            if let job { runTasks(job, worker: worker, count: count) }
        }
    }

    private final class WorkerContext {
        let core: Core
        let worker: Int
        init(core: Core, worker: Int) { self.core = core; self.worker = worker }
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
