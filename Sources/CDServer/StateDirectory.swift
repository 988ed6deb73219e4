import CDProtocol
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The daemon's state directory (rank 0 only):
///
/// ```
/// <root>/                 0700
///   cdtrainerd.sqlite     jobs, events, job → blob references (+ -wal, -shm)
///   blobs/ab/cdef…        uploaded files by SHA-256 (read-only files)
///   jobs/<job id>/        a job's materialized images, checkpoints and outputs
///   tmp/                  partial uploads (emptied at open)
/// ```
/// Every folder is made 0700 (also when it existed with other permissions). An exclusive lock on
/// `<root>/lock` (held until `close`) keeps a second daemon from opening the same directory.
public final class StateDirectory: Sendable {
    public static let databaseFileName = "cdtrainerd.sqlite"

    public let root: String
    public let blobs: BlobStore
    public let jobs: JobStore
    private let lock: LockFile

    /// Opens (creating when needed) the state directory at `path`.
    public init(path: String, maxBlobSize: Int = BlobStore.defaultMaxBlobSize) throws {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        root = absolute.count > 1 && absolute.hasSuffix("/") ? String(absolute.dropLast()) : absolute
        try FileSystem.makeDirectory(root, mode: 0o700)
        lock = try LockFile(path: root + "/lock")
        try FileSystem.makeDirectory(root + "/jobs", mode: 0o700)
        let tmp = root + "/tmp"
        try FileSystem.makeDirectory(tmp, mode: 0o700)
        Self.removeStaleTemporaryFiles(in: tmp)
        blobs = try BlobStore(directory: root + "/blobs", temporaryDirectory: tmp, maxBlobSize: maxBlobSize)
        jobs = try JobStore(path: root + "/" + Self.databaseFileName, blobs: blobs)
    }

    public var databasePath: String { jobs.path }
    public var temporaryDirectory: String { blobs.temporaryDirectory }
    public var jobsDirectory: String { root + "/jobs" }

    /// `<root>/jobs/<id>` (not created); `notFound` for a string that is not a job id, so a
    /// client-supplied id never forms an arbitrary path.
    public func jobDirectory(_ id: String) throws -> String {
        guard JobID.isValid(id) else { throw JobStoreError.notFound(jobID: id) }
        return jobsDirectory + "/" + id
    }

    /// `jobDirectory(id)`, created (0700) when missing.
    @discardableResult
    public func createJobDirectory(_ id: String) throws -> String {
        let dir = try jobDirectory(id)
        try FileSystem.makeDirectory(dir, mode: 0o700)
        return dir
    }

    /// Writes the job's submitted blobs into `<job dir>/<subfolder>` (default `images`) under their
    /// validated client names; returns the folder.
    @discardableResult
    public func materializeImages(of id: String, subfolder: String = "images") throws -> String {
        guard !subfolder.isEmpty, !subfolder.contains("/"), !subfolder.hasPrefix(".") else {
            throw JobStoreError.invalidArgument("subfolder must be one plain folder name")
        }
        let folder = try createJobDirectory(id) + "/" + subfolder
        try blobs.materialize(jobID: id, blobs: try jobs.jobBlobs(id), into: folder)
        return folder
    }

    /// Closes the database and releases the directory lock.
    public func close() throws {
        defer { lock.release() }
        try jobs.close()
    }

    /// Partial uploads of a previous run (a crash mid-upload) are useless: remove them.
    static func removeStaleTemporaryFiles(in tmp: String) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: tmp) else { return }
        for n in names where n.hasPrefix("blob-") && n.hasSuffix(".part") {
            unlink(tmp + "/" + n)
        }
    }
}

public enum StateDirectoryError: ServerError, Equatable {
    /// Another process holds the state directory.
    case locked(path: String)

    public var httpStatus: Int { 500 }
    public var description: String {
        switch self {
        case let .locked(path):
            return "state directory is in use by another process (lock \(path) is held): is another cdtrainerd running?"
        }
    }
}

/// An exclusive `flock` on a file, released by `release()` or at deinit.
final class LockFile: @unchecked Sendable {
    private let mutex = NSLock()
    private var fd: Int32

    init(path: String) throws {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw BlobStoreError.io(path: path, operation: "open", errno: errno) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let e = errno
            close(fd)
            fd = -1
            if e == EWOULDBLOCK { throw StateDirectoryError.locked(path: path) }
            throw BlobStoreError.io(path: path, operation: "flock", errno: e)
        }
    }

    func release() {
        mutex.lock()
        defer { mutex.unlock() }
        if fd >= 0 {
            close(fd)
            fd = -1
        }
    }

    deinit { release() }
}
