import Foundation
import TOMLKit

/// Which daemon cdctl talks to and with which token. Each value comes from the first place that
/// sets it: command-line flags, then the environment, then the config file, then the default.
///
/// | value | flags | environment | config file key |
/// |---|---|---|---|
/// | server | `--server URL` | `CDCTL_SERVER` | `server` |
/// | token | `--token T`, `--token-file F` | `CDCTL_TOKEN`, `CDCTL_TOKEN_FILE` | `token`, `token_file` |
/// | config file | `--config F` | `CDCTL_CONFIG` | |
///
/// Within one place a token beats a token file. The config file is `$XDG_CONFIG_HOME/cdctl/config.toml`
/// (`~/.config/cdctl/config.toml` when that variable is unset); a relative `token_file` there is
/// relative to the config file's folder. The server defaults to `http://127.0.0.1:8470`; a server
/// given without a scheme (`head01:8470`) is taken as `http://`.
public struct ClientConfig: Sendable, Equatable {
    public static let defaultServer = "http://127.0.0.1:8470"

    public var server: URL
    public var token: String?
    /// Where `server` came from: `--server`, `CDCTL_SERVER`, the config file's path, or `default`.
    public var serverSource: String
    /// Where `token` came from (nil without a token), in the same terms; a token file is named by its path.
    public var tokenSource: String?

    public init(server: URL, token: String?, serverSource: String, tokenSource: String?) {
        self.server = server
        self.token = token
        self.serverSource = serverSource
        self.tokenSource = tokenSource
    }

    /// What the command line says (nil: not given).
    public struct Flags: Sendable, Equatable {
        public var server: String?
        public var token: String?
        public var tokenFile: String?
        public var configFile: String?
        public init(server: String? = nil, token: String? = nil, tokenFile: String? = nil, configFile: String? = nil) {
            self.server = server
            self.token = token
            self.tokenFile = tokenFile
            self.configFile = configFile
        }
    }

    /// Resolves server and token from `flags`, `environment` and the config file. The config file
    /// is read only when a value is still missing after flags and environment.
    public static func resolve(flags: Flags, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ClientConfig {
        func env(_ key: String) -> String? {
            guard let v = environment[key], !v.isEmpty else { return nil }
            return v
        }
        let explicitFile = flags.configFile ?? env("CDCTL_CONFIG")
        var cached: ConfigFile??
        func file() throws -> ConfigFile? {
            if let cached { return cached }
            let f: ConfigFile?
            if let explicitFile {
                f = try ConfigFile.read(path: explicitFile, required: true)
            } else if let path = defaultConfigFilePath(environment: environment) {
                f = try ConfigFile.read(path: path, required: false)
            } else {
                f = nil
            }
            cached = .some(f)
            return f
        }

        let server: URL, serverSource: String
        if let s = flags.server {
            (server, serverSource) = (try parseServer(s, source: "--server"), "--server")
        } else if let s = env("CDCTL_SERVER") {
            (server, serverSource) = (try parseServer(s, source: "CDCTL_SERVER"), "CDCTL_SERVER")
        } else if let f = try file(), let s = f.server {
            (server, serverSource) = (try parseServer(s, source: f.path), f.path)
        } else {
            (server, serverSource) = (try parseServer(defaultServer, source: "default"), "default")
        }

        let cwd = FileManager.default.currentDirectoryPath
        var token: String?, tokenSource: String?
        if let t = flags.token {
            (token, tokenSource) = (try checkedToken(t, source: "--token"), "--token")
        } else if let p = flags.tokenFile {
            (token, tokenSource) = try readTokenFile(p, relativeTo: cwd, environment: environment)
        } else if let t = env("CDCTL_TOKEN") {
            (token, tokenSource) = (try checkedToken(t, source: "CDCTL_TOKEN"), "CDCTL_TOKEN")
        } else if let p = env("CDCTL_TOKEN_FILE") {
            (token, tokenSource) = try readTokenFile(p, relativeTo: cwd, environment: environment)
        } else if let f = try file() {
            if let t = f.token {
                (token, tokenSource) = (try checkedToken(t, source: f.path), f.path)
            } else if let p = f.tokenFile {
                (token, tokenSource) = try readTokenFile(p, relativeTo: (f.path as NSString).deletingLastPathComponent, environment: environment)
            }
        }
        return ClientConfig(server: server, token: token, serverSource: serverSource, tokenSource: tokenSource)
    }

    /// `$XDG_CONFIG_HOME/cdctl/config.toml`, else `$HOME/.config/cdctl/config.toml`; nil without either variable.
    public static func defaultConfigFilePath(environment: [String: String]) -> String? {
        // The XDG spec ignores a relative XDG_CONFIG_HOME.
        if let x = environment["XDG_CONFIG_HOME"], x.hasPrefix("/") { return x + "/cdctl/config.toml" }
        if let home = environment["HOME"], !home.isEmpty { return home + "/.config/cdctl/config.toml" }
        return nil
    }

    /// An `http://` or `https://` URL with a host; `host:port` alone means `http://host:port`.
    public static func parseServer(_ text: String, source: String) throws -> URL {
        let s = text.trimmingCharacters(in: .whitespaces)
        let full = s.contains("://") ? s : "http://" + s
        guard let url = URL(string: full), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
              let host = url.host, !host.isEmpty, url.query == nil, url.fragment == nil
        else {
            throw ClientConfigError("server '\(text)' (from \(source)) is not an http:// or https:// address such as \(defaultServer)")
        }
        return url
    }

    static func checkedToken(_ t: String, source: String) throws -> String {
        let token = t.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty else { throw ClientConfigError("the token from \(source) is empty") }
        guard !token.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value > 0x7E }) else {
            throw ClientConfigError("the token from \(source) holds spaces or characters other than printable ASCII")
        }
        return token
    }

    /// The token in a file (surrounding whitespace removed) and the file's path.
    static func readTokenFile(_ path: String, relativeTo folder: String, environment: [String: String]) throws -> (String, String) {
        let p = expand(path, relativeTo: folder, environment: environment)
        guard let data = FileManager.default.contents(atPath: p) else {
            let why = FileManager.default.fileExists(atPath: p)
                ? "cannot be read (permissions? on the head node the token file is readable by root only; copy the token to a file of your own)"
                : "does not exist"
            throw ClientConfigError("token file \(p) \(why)")
        }
        return (try checkedToken(String(decoding: data, as: UTF8.self), source: "token file \(p)"), p)
    }

    /// `~` and `~/…` expanded with `HOME`; a relative path taken inside `folder`.
    static func expand(_ path: String, relativeTo folder: String, environment: [String: String]) -> String {
        if path == "~" || path.hasPrefix("~/"), let home = environment["HOME"] { return home + path.dropFirst() }
        return path.hasPrefix("/") ? path : folder + "/" + path
    }
}

/// The config file's values.
struct ConfigFile: Sendable, Equatable {
    static let keys = ["server", "token", "token_file"]

    var path: String
    var server: String?
    var token: String?
    var tokenFile: String?

    /// nil when the file does not exist and is not `required`.
    static func read(path: String, required: Bool) throws -> ConfigFile? {
        guard let data = FileManager.default.contents(atPath: path) else {
            if !required, !FileManager.default.fileExists(atPath: path) { return nil }
            throw ClientConfigError("config file \(path) " + (FileManager.default.fileExists(atPath: path) ? "cannot be read" : "does not exist"))
        }
        let table: TOMLTable
        do {
            table = try TOMLTable(string: String(decoding: data, as: UTF8.self))
        } catch let e as TOMLParseError {
            throw ClientConfigError("config file \(path), line \(e.source.begin.line): \(e.description)")
        } catch {
            throw ClientConfigError("config file \(path): \(error)")
        }
        var problems: [String] = []
        for key in table.keys.sorted() where !keys.contains(key) {
            problems.append("unknown key '\(key)' (known: \(keys.joined(separator: ", ")))")
        }
        func string(_ key: String) -> String? {
            guard let v = table[key] else { return nil }
            guard let s = v.string else {
                problems.append("\(key) must be a string")
                return nil
            }
            return s
        }
        let file = ConfigFile(path: path, server: string("server"), token: string("token"), tokenFile: string("token_file"))
        if !problems.isEmpty { throw ClientConfigError("config file \(path): " + problems.joined(separator: "; ")) }
        return file
    }
}

public struct ClientConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
