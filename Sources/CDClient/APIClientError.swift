import CDProtocol
import Foundation

/// Why an API call failed. `description` says what went wrong and, where there is one, what to do.
public enum APIClientError: Error, CustomStringConvertible, Sendable, Equatable {
    /// No answer: connection refused or broken, timed out, host not found, after retrying for
    /// `retriedSeconds` (0 when the failure is not one that retrying can fix).
    case unreachable(server: String, reason: String, retriedSeconds: Double)
    /// The daemon answered with an error status; its message and, for an invalid job (422), every
    /// problem with its field and every missing blob.
    case server(status: Int, message: String, problems: [JobFileError.Problem], missingBlobs: [APIErrorResponse.MissingBlob])
    /// An answer that is not what the API promises (undecodable JSON, a short download, …).
    case badResponse(String)
    /// Refused before sending: an argument that cannot be part of a request (a malformed job id).
    case invalidRequest(String)

    /// The HTTP status of a `server` error.
    public var status: Int? {
        if case let .server(status, _, _, _) = self { return status }
        return nil
    }

    /// The daemon's message of a `server` error.
    public var serverMessage: String? {
        if case let .server(_, message, _, _) = self { return message }
        return nil
    }

    public var problems: [JobFileError.Problem] {
        if case let .server(_, _, problems, _) = self { return problems }
        return []
    }

    public var missingBlobs: [APIErrorResponse.MissingBlob] {
        if case let .server(_, _, _, missing) = self { return missing }
        return []
    }

    /// What the user can do about it, when the error itself does not say.
    public var hint: String? {
        switch self {
        case .unreachable:
            return "is cdtrainerd running there? Check `systemctl status cdtrainerd` on the head node, "
                + "or point cdctl at the right daemon with --server or CDCTL_SERVER"
        case let .server(status, _, _, _):
            switch status {
            case 401, 403:
                return "set CDCTL_TOKEN or --token (or token_file in ~/.config/cdctl/config.toml); "
                    + "the token is in /etc/cdtrainerd/token on the head node"
            case 413:
                return "the file is larger than the daemon accepts (max_upload_mib in its configuration)"
            case 500:
                return "the daemon failed; its log (`journalctl -u cdtrainerd` on the head node) says why"
            default:
                return nil
            }
        case .badResponse:
            return "is --server the address of cdtrainerd (and not another service)?"
        case .invalidRequest:
            return nil
        }
    }

    public var description: String {
        var text: String
        switch self {
        case let .unreachable(server, reason, retried):
            text = "cannot reach cdtrainerd at \(server): \(reason)"
            if retried > 0 { text += " (retried for \(Int(retried.rounded())) s)" }
        case let .server(status, message, problems, missing):
            text = "the daemon refused the request (HTTP \(status)): \(message)"
            // The message of a 422 repeats the problems in one line; list them one per line too.
            for p in problems { text += "\n  " + p.description }
            for m in missing { text += "\n  \(m.fileName): blob \(m.sha256) is not on the daemon" }
        case let .badResponse(message):
            text = "unexpected answer from the daemon: \(message)"
        case let .invalidRequest(message):
            text = message
        }
        if let hint { text += "\n" + hint }
        return text
    }
}

/// A local file that could not be read or written.
public struct ClientFileError: Error, CustomStringConvertible, Sendable, Equatable {
    public var path: String
    public var message: String
    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "\(path): \(message)" }
}
