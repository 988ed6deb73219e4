import CDDistributed
import CDDistributedMPI
import CDTensor
import Foundation

/// How `run` and `serve` join their world, on the main thread (which then makes every MPI call).
enum MPIWorld {
    /// Under mpirun: MPI initialized (`MPI_THREAD_FUNNELED`), and ranks sharing a node split its
    /// cores unless CD_NUM_THREADS is set (before the thread pool is created). Started directly: a
    /// world of one without MPI (OpenMPI 4.1 could make a singleton world, but that forks a helper
    /// daemon for nothing). The caller finalizes `mpi`.
    static func join() throws -> (mpi: MPICommunicator?, world: Communicator) {
        let mpi = MPICommunicator.launchedByMPI ? try MPICommunicator() : nil
        let perNode = MPICommunicator.localSize
        if perNode > 1, ProcessInfo.processInfo.environment["CD_NUM_THREADS"] == nil {
            setenv("CD_NUM_THREADS", String(max(1, ThreadPool.defaultThreadCount / perNode)), 1)
        }
        return (mpi, mpi ?? SingleProcessCommunicator())
    }
}
