import CDProtocol
import Crypto
import Foundation

/// How the API server listens and what it accepts.
public struct ServerConfig: Sendable, CustomStringConvertible {
    /// Address to bind; loopback by default.
    public var host: String
    /// TCP port; 0 picks a free one (tests).
    public var port: Int
    /// The bearer token every call but `GET /v1/health` must carry; nil: no token (loopback only).
    public var token: String?
    /// Largest upload of `POST /v1/blobs` (the blob store's own limit applies too).
    public var maxBlobBodySize: Int
    /// Largest JSON request body (`POST /v1/jobs`).
    public var maxJSONBodySize: Int
    /// Longest `wait` of a long poll, in seconds.
    public var maxEventWaitSeconds: Int
    /// `GET /v1/health` answers without a token (it tells nothing but "ok").
    public var healthWithoutToken: Bool

    public static let defaultPort = 8470

    public init(
        host: String = "127.0.0.1", port: Int = ServerConfig.defaultPort, token: String? = nil,
        maxBlobBodySize: Int = BlobStore.defaultMaxBlobSize, maxJSONBodySize: Int = 1 << 20,
        maxEventWaitSeconds: Int = 60, healthWithoutToken: Bool = true
    ) {
        self.host = host
        self.port = port
        self.token = token
        self.maxBlobBodySize = maxBlobBodySize
        self.maxJSONBodySize = maxJSONBodySize
        self.maxEventWaitSeconds = maxEventWaitSeconds
        self.healthWithoutToken = healthWithoutToken
    }

    /// Whether `host` is a loopback address (`127.0.0.0/8`, `::1`, `localhost`).
    public static func isLoopback(_ host: String) -> Bool {
        let h = host.lowercased()
        if h == "localhost" || h == "::1" || h == "[::1]" { return true }
        let parts = h.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    /// Refuses a configuration the server must not start with: a non-loopback address without a
    /// token, an empty or too short token, a bad port or limits.
    public func validate() throws {
        var problems: [String] = []
        if host.isEmpty { problems.append("host must not be empty") }
        if !(0...65535).contains(port) { problems.append("port must be 0…65535 (got \(port))") }
        if let token {
            if token.count < 16 { problems.append("the token must be at least 16 characters") }
            if token.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value > 0x7E }) {
                problems.append("the token must be printable ASCII without spaces")
            }
        } else if !Self.isLoopback(host) {
            problems.append(
                "refusing to listen on \(host) without a token: set a token (token file) or listen on 127.0.0.1")
        }
        if maxBlobBodySize <= 0 { problems.append("max blob size must be positive") }
        if maxJSONBodySize <= 0 { problems.append("max JSON body size must be positive") }
        if maxEventWaitSeconds < 0 { problems.append("max event wait must not be negative") }
        if !problems.isEmpty { throw ServerConfigError(problems: problems) }
    }

    /// Never shows the token.
    public var description: String {
        "ServerConfig(host: \(host), port: \(port), token: \(token == nil ? "none" : "<redacted>"), "
            + "maxBlobBodySize: \(maxBlobBodySize), maxJSONBodySize: \(maxJSONBodySize))"
    }

    /// Whether `header` (the whole `Authorization` value) carries the token; constant time in the
    /// token's content (both sides are hashed to 32 bytes before the comparison).
    func authorizes(_ header: String?) -> Bool {
        guard let token else { return true }
        guard let header else { return false }
        let prefix = "bearer "
        guard header.count > prefix.count, header.prefix(prefix.count).lowercased() == prefix else { return false }
        let given = header.dropFirst(prefix.count).trimmingCharacters(in: .whitespaces)
        let a = Array(SHA256.hash(data: Data(given.utf8)))
        let b = Array(SHA256.hash(data: Data(token.utf8)))
        var diff: UInt8 = 0
        for i in 0..<32 { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}

public struct ServerConfigError: Error, CustomStringConvertible, Equatable {
    public var problems: [String]
    public var description: String { "server configuration: " + problems.joined(separator: "; ") }
}
