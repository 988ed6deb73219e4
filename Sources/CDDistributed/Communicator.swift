/// The collectives data-parallel training needs, over a fixed world of `size` processes.
///
/// Every call is collective: all ranks make the same calls in the same order, with the same
/// counts and root. Implementations may require that all calls come from one thread (MPI's
/// `MPI_THREAD_FUNNELED`: the thread that created the communicator).
public protocol Communicator: AnyObject {
    /// This process's rank, `0 ..< size`.
    var rank: Int { get }
    /// The number of processes.
    var size: Int { get }
    /// Element-wise sum over all ranks, in place: afterwards every rank holds the same sums.
    func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws
    /// `root`'s `count` floats replace everyone else's.
    func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws
    /// `root`'s bytes replace everyone else's; the length travels too (receivers may pass `[]`).
    func broadcast(bytes: inout [UInt8], root: Int) throws
    /// Returns once every rank has entered it.
    func barrier() throws
    /// `broadcast(bytes:root:)` for a message that may be long in coming (a daemon's next command):
    /// the receivers wait by sleeping `pollInterval` seconds between checks instead of the busy
    /// polling of MPI's blocking collectives, so idle ranks cost no CPU.
    func idleBroadcast(bytes: inout [UInt8], root: Int, pollInterval: Double) throws
}

extension Communicator {
    /// Whether this rank writes files and prints progress (rank 0).
    public var isLead: Bool { rank == 0 }
}

/// A world of one: rank 0 of 1; every collective leaves its buffer as it is.
public final class SingleProcessCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {}
    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws {
        precondition(root == 0, "root \(root) outside a world of one")
    }
    public func broadcast(bytes: inout [UInt8], root: Int) throws {
        precondition(root == 0, "root \(root) outside a world of one")
    }
    public func barrier() throws {}
    public func idleBroadcast(bytes: inout [UInt8], root: Int, pollInterval: Double) throws {
        precondition(root == 0, "root \(root) outside a world of one")
    }
}

/// How a global batch is split over ranks: contiguous, the first `total % size` ranks one sample
/// more (ranks beyond `total` get none). Rank r's share of batch k is global samples
/// `k·total + share(...)`; weighting each sample by 1/total makes the sum over ranks the global mean.
public enum BatchShare {
    /// Positions `0 ..< total` of the global batch that `rank` of `size` processes.
    public static func range(rank: Int, size: Int, total: Int) -> Range<Int> {
        precondition(size >= 1 && rank >= 0 && rank < size && total >= 0, "rank \(rank) of \(size), total \(total)")
        let base = total / size, extra = total % size
        let start = rank * base + min(rank, extra)
        return start..<(start + base + (rank < extra ? 1 : 0))
    }
}

/// A collective failed (the message names the call and, for MPI, the library's error string).
public struct CommunicatorError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let code: Int
    public let message: String
    public init(call: String, code: Int, message: String) {
        self.call = call
        self.code = code
        self.message = message
    }
    public var description: String { "\(call) failed (\(code)): \(message)" }
}
