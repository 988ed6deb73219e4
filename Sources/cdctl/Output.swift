import CDProtocol
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Where cdctl writes: results on stdout (text or JSON), messages and progress on stderr. Writes
/// go straight to the file descriptors, so `logs -f | grep` sees each line at once.
enum Output {
    /// One line on stdout.
    static func line(_ s: String) {
        FileHandle.standardOutput.write(Data((s + "\n").utf8))
    }

    /// One line on stderr: messages, errors, progress in plain lines.
    static func note(_ s: String) {
        FileHandle.standardError.write(Data((s + "\n").utf8))
    }

    /// Text on stderr as it is (progress bars: `\r` without a newline).
    static func progress(_ s: String) {
        FileHandle.standardError.write(Data(s.utf8))
    }

    /// `value` as JSON on stdout: indented, or one line (`compact`, for streams of events).
    static func json<T: Encodable>(_ value: T, compact: Bool = false) throws {
        let e = APICoding.encoder()
        if !compact { e.outputFormatting.insert(.prettyPrinted) }
        line(String(decoding: try e.encode(value), as: UTF8.self))
    }

    static var stderrIsTerminal: Bool { isatty(STDERR_FILENO) == 1 }

    /// `812 B`, `3.4 MB`.
    static func size(_ n: Int) -> String {
        n < 1000 ? "\(n) B" : n < 1_000_000 ? String(format: "%.1f kB", Double(n) / 1e3) : String(format: "%.1f MB", Double(n) / 1e6)
    }
}
