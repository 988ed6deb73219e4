import CDNNL

/// Thread control for oneDNN calls. oneDNN (Debian's build) runs on OpenMP, whose thread count is a
/// per-thread setting, and each thread that calls it gets its own team. So that the process never
/// runs more compute threads than `ThreadPool.shared.threadCount`, a call runs multi-threaded only
/// while it holds the pool (`ThreadPool.withTeam`): from inside a pool task, or while another thread
/// (the daemon's sampler beside training) holds it, it runs on one thread.
enum OneDNN {
    /// Runs `body` with the calling thread's OpenMP count set to the threads it may use.
    @inline(__always)
    static func withThreads<R>(_ body: (_ threads: Int) -> R) -> R {
        ThreadPool.shared.withTeam { threads in
            if omp_get_max_threads() != Int32(threads) { omp_set_num_threads(Int32(threads)) }
            return body(threads)
        }
    }
}
