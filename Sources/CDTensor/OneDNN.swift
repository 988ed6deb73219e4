import CDNNL

/// Thread control for oneDNN calls. oneDNN (Debian's build) runs on OpenMP, whose thread count is a
/// per-thread setting: a call from inside a `ThreadPool` task must use one thread (the pool already
/// fills the cores), a call from outside uses the pool's count, so OpenMP's team and our workers
/// never oversubscribe the cores.
enum OneDNN {
    @inline(__always)
    static func useThreads() {
        let wanted = ThreadPool.isInsideTask ? 1 : ThreadPool.shared.threadCount
        if omp_get_max_threads() != Int32(wanted) { omp_set_num_threads(Int32(wanted)) }
    }
}
