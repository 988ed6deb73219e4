import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// How long and how often a call is repeated while the daemon cannot be reached (down, restarting
/// under systemd, network hiccup): exponential backoff from `initialDelay`, doubling up to
/// `maxDelay`, for at most `budget` seconds counted from the first failure of the call (so a long
/// poll or a long download that broke late still gets the whole budget).
///
/// Only failures to reach the server are retried, never HTTP error answers: every API call is
/// safe to repeat (reads, content-addressed uploads, cancel, and submit through its
/// `submission_id`).
public struct RetryPolicy: Sendable, Equatable {
    public var initialDelay: Double
    public var maxDelay: Double
    /// Seconds of retrying after the first failure; 0: no retries.
    public var budget: Double

    public init(initialDelay: Double = 0.5, maxDelay: Double = 8, budget: Double = 60) {
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
        self.budget = budget
    }

    /// 0.5 s doubling to 8 s, for 60 s.
    public static let standard = RetryPolicy()
    /// Fail at the first connection error.
    public static let none = RetryPolicy(budget: 0)

    /// The pause after the `failure`-th consecutive failure (1-based), before any budget cut.
    public func delay(afterFailure failure: Int) -> Double {
        let exponent = Double(max(0, min(failure - 1, 62)))
        return min(maxDelay, initialDelay * pow(2, exponent))
    }

    /// The pause before the next try after `failure` failures with `elapsed` seconds spent since
    /// the first; nil once the budget is used up. The last pause is cut to what is left, so the
    /// last try happens at the end of the budget rather than before it.
    public func nextDelay(afterFailure failure: Int, elapsed: Double) -> Double? {
        let left = budget - elapsed
        guard left > 0 else { return nil }
        return min(delay(afterFailure: failure), left)
    }

    /// Whether `error` means the server was not reached or the connection broke (worth a retry),
    /// as opposed to an answer.
    public static func isConnectionFailure(_ error: any Error) -> Bool {
        guard let e = error as? URLError else { return false }
        switch e.code {
        case .cannotConnectToHost, .networkConnectionLost, .timedOut, .notConnectedToInternet, .badServerResponse,
             .zeroByteResource:
            return true
        default:
            return false
        }
    }
}
