/// An error the API layer can answer with: an HTTP status and a message fit for the client.
public protocol ServerError: Error, CustomStringConvertible {
    /// 400 bad input, 404 unknown id, 409 wrong state, 413 too large, 422 unknown references, 500 server.
    var httpStatus: Int { get }
}

/// A blob referenced by a job: the client's file name and the content hash.
public struct BlobReference: Codable, Sendable, Equatable, Hashable, CustomStringConvertible {
    public var fileName: String
    public var sha256: String
    public init(fileName: String, sha256: String) {
        self.fileName = fileName
        self.sha256 = sha256
    }
    public var description: String { "\(fileName) (\(sha256))" }

    enum CodingKeys: String, CodingKey {
        case fileName = "file_name"
        case sha256
    }
}

public enum JobStoreError: ServerError, Equatable {
    /// No job with this id (or the id is malformed).
    case notFound(jobID: String)
    /// The transition is not in `JobState.allowedNextStates`; nothing was changed.
    case illegalTransition(jobID: String, from: JobState, to: JobState)
    /// Progress or a checkpoint was reported for a job that is not running; nothing was changed.
    case notRunning(jobID: String, state: JobState)
    /// The submission references blobs the blob store does not hold; nothing was stored.
    case missingBlobs([BlobReference])
    /// A blob reference with a file name or hash that is not acceptable; nothing was stored.
    case invalidBlobReference(fileName: String, reason: String)
    /// An argument out of range (negative step, bad limit, …).
    case invalidArgument(String)
    /// Stored data that cannot be read back (a spec or payload that no longer decodes).
    case corrupt(jobID: String, detail: String)

    public var httpStatus: Int {
        switch self {
        case .notFound: return 404
        case .illegalTransition, .notRunning: return 409
        case .missingBlobs: return 422
        case .invalidBlobReference, .invalidArgument: return 400
        case .corrupt: return 500
        }
    }

    public var description: String {
        switch self {
        case let .notFound(id):
            return "no job '\(id)'"
        case let .illegalTransition(id, from, to):
            return "job \(id) is \(from) and cannot become \(to)"
                + (from.isTerminal ? " (it is finished)" : " (allowed: \(from.allowedNextStates.map(\.rawValue).sorted().joined(separator: ", ")))")
        case let .notRunning(id, state):
            return "job \(id) is \(state), not running"
        case let .missingBlobs(refs):
            return "unknown blob\(refs.count == 1 ? "" : "s") (upload \(refs.count == 1 ? "it" : "them") first): "
                + refs.map(\.description).joined(separator: ", ")
        case let .invalidBlobReference(name, reason):
            return "blob reference '\(BlobStore.printable(name))': \(reason)"
        case let .invalidArgument(m):
            return m
        case let .corrupt(id, detail):
            return "stored data of job \(id) is unreadable: \(detail)"
        }
    }
}

public enum BlobStoreError: ServerError, Equatable {
    /// Not 64 lowercase hex characters.
    case invalidSHA(String)
    /// More bytes than the store's limit.
    case tooLarge(limit: Int)
    case notFound(sha256: String)
    /// The stored file no longer hashes to its name.
    case corrupt(sha256: String, actual: String)
    /// A client file name that cannot become a file name in a job folder.
    case invalidFileName(String, reason: String)
    /// A file-system call failed.
    case io(path: String, operation: String, errno: Int32)
    /// The writer was used after `finish` or `abort`.
    case writerClosed

    public var httpStatus: Int {
        switch self {
        case .invalidSHA, .invalidFileName: return 400
        case .tooLarge: return 413
        case .notFound: return 404
        case .corrupt, .io, .writerClosed: return 500
        }
    }

    public var description: String {
        switch self {
        case let .invalidSHA(s):
            return "'\(BlobStore.printable(s))' is not a SHA-256 (64 lowercase hex characters)"
        case let .tooLarge(limit):
            return "blob larger than the limit of \(limit) bytes"
        case let .notFound(sha):
            return "no blob \(sha)"
        case let .corrupt(sha, actual):
            return "blob \(sha) is corrupt (its content hashes to \(actual))"
        case let .invalidFileName(name, reason):
            return "file name '\(BlobStore.printable(name))': \(reason)"
        case let .io(path, op, err):
            return "\(op) \(path): \(String(cString: strerror(err)))"
        case .writerClosed:
            return "blob writer used after finish or abort"
        }
    }
}

#if canImport(Glibc)
import CDProtocol
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
