import CDClient
import CDProtocol

/// cdctl's exit codes (documented in `CDCtl`'s help and the README).
enum ExitStatus {
    static let ok: Int32 = 0
    static let jobUnsuccessful: Int32 = 1
    static let usage: Int32 = 2
    static let unreachable: Int32 = 3
    static let authRefused: Int32 = 4
    static let notFound: Int32 = 5
    static let conflict: Int32 = 6
    static let failure: Int32 = 7

    /// The code of a failed command.
    static func code(for error: any Error) -> Int32 {
        switch error {
        case let e as APIClientError:
            switch e {
            case .unreachable: return unreachable
            case .invalidRequest: return usage
            case .badResponse: return failure
            case let .server(status, _, _, _):
                switch status {
                case 401, 403: return authRefused
                case 404: return notFound
                case 409: return conflict
                case 400..<500: return usage
                default: return failure
                }
            }
        case is JobFileError, is ClientConfigError, is UsageError: return usage
        case is CheckpointNotFound: return notFound
        default: return failure
        }
    }

    /// 0 for a job that succeeded, 1 for one that failed or was cancelled.
    static func code(for state: JobState) -> Int32 {
        state == .succeeded ? ok : jobUnsuccessful
    }
}

/// A bad argument found after parsing (exit code 2).
struct UsageError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
