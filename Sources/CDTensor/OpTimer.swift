#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Synchronization

/// Wall-clock time per kind of kernel, for the benchmarks' breakdown ("where does a step go").
///
/// Off unless a benchmark turns it on (then one relaxed load per kernel call). Only calls made on
/// the thread that turned it on are timed, and only the outermost one when kernels nest, so the
/// kinds add up to at most the wall time; the rest of a step (optimizer, data, glue) is "other".
/// Kernels start a measurement with `OpTimer.begin(kind)` and end it with `end` (a `defer`).
public enum OpTimer {
    public enum Kind: Int, CaseIterable, Sendable {
        case conv, matmul, attention, norm, elementwise
        public var name: String { ["conv", "matmul", "attention", "norm", "elementwise"][rawValue] }
    }

    private static let enabled = Atomic<Bool>(false)
    private static let seconds = Mutex([Double](repeating: 0, count: Kind.allCases.count))
    /// The timing thread and its nesting depth: touched by that thread only.
    nonisolated(unsafe) private static var owner = pthread_self()
    nonisolated(unsafe) private static var depth = 0

    /// Starts timing on the calling thread (and clears the totals), or stops it.
    public static func enable(_ on: Bool) {
        if on {
            owner = pthread_self()
            depth = 0
            reset()
        }
        enabled.store(on, ordering: .releasing)
    }

    public struct Token {
        let kind: Kind
        let start: UInt64
    }

    /// nil when timing is off, on another thread, or inside an outer measurement.
    @inline(__always) public static func begin(_ kind: Kind) -> Token? {
        guard enabled.load(ordering: .relaxed), pthread_equal(owner, pthread_self()) != 0 else { return nil }
        depth += 1
        return depth == 1 ? Token(kind: kind, start: DispatchTime.now().uptimeNanoseconds) : nil
    }

    @inline(__always) public static func end(_ token: Token?) {
        guard enabled.load(ordering: .relaxed), pthread_equal(owner, pthread_self()) != 0 else { return }
        depth -= 1
        guard let token else { return }
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - token.start) / 1e9
        seconds.withLock { $0[token.kind.rawValue] += elapsed }
    }

    /// Seconds per kind since the last reset.
    public static var totals: [Kind: Double] {
        seconds.withLock { s in Dictionary(uniqueKeysWithValues: Kind.allCases.map { ($0, s[$0.rawValue]) }) }
    }

    public static func reset() { seconds.withLock { $0 = [Double](repeating: 0, count: Kind.allCases.count) } }
}
