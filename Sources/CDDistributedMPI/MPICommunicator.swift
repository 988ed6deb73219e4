import CDDistributed
import CMPI
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `Communicator` over OpenMPI's `MPI_COMM_WORLD`.
///
/// `init` calls `MPI_Init_thread(MPI_THREAD_FUNNELED)` on the calling thread; from then on every
/// MPI call must come from that same thread (checked: another thread gets an error, not a hang).
/// Errors are returned, not fatal (`MPI_ERRORS_RETURN` on the world), and become
/// `CommunicatorError`s naming the call. `finalize()` ends MPI (once per process: MPI cannot be
/// initialized again afterwards); `abort(code:)` ends the whole world, for a failure on one rank
/// that the others cannot know about (they would wait in their next collective forever).
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    /// The thread that initialized MPI; the only one allowed to call it (FUNNELED).
    private let owner: pthread_t
    private let world: MPI_Comm
    private var finalized = false

    /// Whether this process was started by OpenMPI's launcher (`mpirun`/`mpiexec`), which sets
    /// `OMPI_COMM_WORLD_SIZE` for every rank.
    public static var launchedByMPI: Bool {
        ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] != nil
    }

    /// The number of ranks on this node as the launcher reports it (1 when not launched by mpirun).
    public static var localSize: Int {
        ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init) ?? 1
    }

    /// Initializes MPI on this thread with `MPI_THREAD_FUNNELED`. Outside `mpirun` OpenMPI 4.1
    /// makes a singleton world of one (it starts a helper `orted`).
    public init() throws {
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        guard initialized == 0 else {
            throw CommunicatorError(call: "MPI_Init_thread", code: -1, message: "MPI is already initialized in this process")
        }
        var provided: Int32 = 0
        let rc = MPI_Init_thread(nil, nil, cmpi_thread_funneled(), &provided)
        guard rc == MPI_SUCCESS else { throw CommunicatorError(call: "MPI_Init_thread", code: Int(rc), message: Self.errorString(rc)) }
        world = cmpi_comm_world()
        owner = pthread_self()
        // From here on a failure must not leave MPI initialized without a way to finalize it.
        func fail(_ call: String, _ code: Int32) -> CommunicatorError {
            let e = CommunicatorError(call: call, code: Int(code), message: Self.errorString(code))
            MPI_Finalize()
            return e
        }
        guard provided >= cmpi_thread_funneled() else {
            MPI_Finalize()
            throw CommunicatorError(call: "MPI_Init_thread", code: Int(provided),
                                    message: "the MPI library provides thread level \(provided), below MPI_THREAD_FUNNELED")
        }
        var r = MPI_Comm_set_errhandler(world, cmpi_errors_return())
        guard r == MPI_SUCCESS else { throw fail("MPI_Comm_set_errhandler", r) }
        var value: Int32 = 0
        r = MPI_Comm_rank(world, &value)
        guard r == MPI_SUCCESS else { throw fail("MPI_Comm_rank", r) }
        rank = Int(value)
        r = MPI_Comm_size(world, &value)
        guard r == MPI_SUCCESS else { throw fail("MPI_Comm_size", r) }
        size = Int(value)
    }

    deinit { finalize() }

    /// `MPI_Finalize` (from the owning thread; later calls do nothing).
    public func finalize() {
        guard !finalized, pthread_equal(owner, pthread_self()) != 0 else { return }
        finalized = true
        var done: Int32 = 0
        MPI_Finalized(&done)
        if done == 0 { MPI_Finalize() }
    }

    /// `MPI_Abort` on the world: every rank (and mpirun) exits with `code`. Does not return.
    public func abort(code: Int32) -> Never {
        MPI_Abort(world, code)
        exit(code)
    }

    // MARK: - Collectives

    /// MPI counts are 32-bit; longer buffers go in chunks of this many elements.
    static let chunk = 1 << 30

    public func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try checkThread("MPI_Allreduce")
        var done = 0
        while done < count {
            let n = min(Self.chunk, count - done)
            try check("MPI_Allreduce", MPI_Allreduce(cmpi_in_place(), buffer + done, Int32(n), cmpi_float(), cmpi_sum(), world))
            done += n
        }
    }

    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws {
        try checkThread("MPI_Bcast")
        try checkRoot(root)
        var done = 0
        while done < count {
            let n = min(Self.chunk, count - done)
            try check("MPI_Bcast", MPI_Bcast(buffer + done, Int32(n), cmpi_float(), Int32(root), world))
            done += n
        }
    }

    public func broadcast(bytes: inout [UInt8], root: Int) throws {
        try checkThread("MPI_Bcast")
        try checkRoot(root)
        var length = Int64(bytes.count)
        try check("MPI_Bcast", MPI_Bcast(&length, 1, cmpi_int64(), Int32(root), world))
        try broadcastPayload(&bytes, length: length, root: root)
    }

    /// The bytes after their length: receivers size their buffer first.
    private func broadcastPayload(_ bytes: inout [UInt8], length: Int64, root: Int) throws {
        if rank != root { bytes = [UInt8](repeating: 0, count: Int(length)) }
        try bytes.withUnsafeMutableBytes { raw in
            guard let base = raw.baseAddress else { return }
            var done = 0
            while done < raw.count {
                let n = min(Self.chunk, raw.count - done)
                try check("MPI_Bcast", MPI_Bcast(base + done, Int32(n), cmpi_byte(), Int32(root), world))
                done += n
            }
        }
    }

    /// The length travels in a non-blocking `MPI_Ibcast` that every rank (the root too: blocking
    /// and non-blocking collectives do not match) completes with `MPI_Test` and a sleep between
    /// tests; the payload, sent once all ranks are known to be here, in a plain broadcast.
    public func idleBroadcast(bytes: inout [UInt8], root: Int, pollInterval: Double) throws {
        try checkThread("MPI_Ibcast")
        try checkRoot(root)
        var length = Int64(bytes.count)
        var request: MPI_Request?
        try check("MPI_Ibcast", MPI_Ibcast(&length, 1, cmpi_int64(), Int32(root), world, &request))
        var done: Int32 = 0
        let pause = timespec(tv_sec: Int(pollInterval), tv_nsec: Int((pollInterval - pollInterval.rounded(.down)) * 1e9))
        while true {
            try check("MPI_Test", MPI_Test(&request, &done, cmpi_status_ignore()))
            if done != 0 { break }
            var rest = pause
            nanosleep(&rest, nil)
        }
        try broadcastPayload(&bytes, length: length, root: root)
    }

    public func barrier() throws {
        try checkThread("MPI_Barrier")
        try check("MPI_Barrier", MPI_Barrier(world))
    }

    // MARK: - Errors

    private func check(_ call: String, _ rc: Int32) throws {
        guard rc != MPI_SUCCESS else { return }
        throw CommunicatorError(call: call, code: Int(rc), message: Self.errorString(rc))
    }

    private func checkThread(_ call: String) throws {
        guard !finalized else { throw CommunicatorError(call: call, code: -1, message: "MPI was finalized") }
        guard pthread_equal(owner, pthread_self()) != 0 else {
            throw CommunicatorError(call: call, code: -1,
                                    message: "called from a thread other than the one that initialized MPI (MPI_THREAD_FUNNELED)")
        }
    }

    private func checkRoot(_ root: Int) throws {
        guard root >= 0 && root < size else {
            throw CommunicatorError(call: "MPI_Bcast", code: -1, message: "root \(root) is not a rank of a world of \(size)")
        }
    }

    static func errorString(_ code: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: Int(cmpi_max_error_string()) + 1)
        var length: Int32 = 0
        guard MPI_Error_string(code, &buffer, &length) == MPI_SUCCESS else { return "MPI error \(code)" }
        return String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
