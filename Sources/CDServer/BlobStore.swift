import CDProtocol
import Crypto
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Uploaded files, content-addressed by SHA-256: blob `abcdef…` lives at `<directory>/ab/cdef…`.
///
/// - Writes go to a temporary file in `temporaryDirectory` (same file system), are fsynced, then
///   hard-linked into place; an existing blob with the same hash is kept as it is (dedup).
/// - Blob files are read-only (0400); shard folders are 0700.
/// - Hash strings are checked (64 lowercase hex) before any path is formed from them, and client
///   file names never become paths except through `validateFileName` in `materialize`.
/// - Each blob is at most `maxBlobSize` bytes; a larger upload fails with `tooLarge` and leaves nothing.
public struct BlobStore: Sendable {
    /// 64 MiB.
    public static let defaultMaxBlobSize = 64 << 20
    /// Extensions a materialized file name may have (compared case-insensitively): images and captions.
    public static let allowedExtensions: Set<String> = ["jpg", "jpeg", "png", "webp", "txt"]

    public let directory: String
    public let temporaryDirectory: String
    public let maxBlobSize: Int

    /// Creates both folders (0700) when missing.
    public init(directory: String, temporaryDirectory: String, maxBlobSize: Int = BlobStore.defaultMaxBlobSize) throws {
        precondition(maxBlobSize > 0, "maxBlobSize must be positive")
        self.directory = directory
        self.temporaryDirectory = temporaryDirectory
        self.maxBlobSize = maxBlobSize
        try FileSystem.makeDirectory(directory, mode: 0o700)
        try FileSystem.makeDirectory(temporaryDirectory, mode: 0o700)
    }

    // MARK: Hashes and paths

    /// Exactly 64 characters of `0-9a-f`.
    public static func isValidSHA(_ s: String) -> Bool {
        let u = s.utf8
        return u.count == 64 && u.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    /// `sha` itself, or `invalidSHA`.
    @discardableResult
    public static func checkSHA(_ sha: String) throws -> String {
        guard isValidSHA(sha) else { throw BlobStoreError.invalidSHA(sha) }
        return sha
    }

    /// Where blob `sha` is (or would be) stored; checks the hash first.
    public func path(_ sha: String) throws -> String {
        try Self.checkSHA(sha)
        return directory + "/" + sha.prefix(2) + "/" + sha.dropFirst(2)
    }

    /// Whether blob `sha` is stored (a regular file at its path).
    public func contains(_ sha: String) throws -> Bool {
        let p = try path(sha)
        var st = stat()
        return stat(p, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    /// Size in bytes of a stored blob.
    public func size(_ sha: String) throws -> Int {
        let p = try path(sha)
        var st = stat()
        guard stat(p, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { throw BlobStoreError.notFound(sha256: sha) }
        return Int(st.st_size)
    }

    /// The content of a stored blob.
    public func data(_ sha: String) throws -> Data {
        let p = try path(sha)
        guard try contains(sha) else { throw BlobStoreError.notFound(sha256: sha) }
        guard let d = FileManager.default.contents(atPath: p) else { throw BlobStoreError.io(path: p, operation: "read", errno: errno) }
        return d
    }

    // MARK: Writing

    /// A streaming writer (feed it chunks of a request body, then `finish`).
    public func makeWriter() throws -> BlobWriter { try BlobWriter(store: self) }

    /// Stores `data`; returns its SHA-256 (hex).
    @discardableResult
    public func put(data: Data) throws -> String {
        guard data.count <= maxBlobSize else { throw BlobStoreError.tooLarge(limit: maxBlobSize) }
        let w = try makeWriter()
        do {
            try w.write(data)
            return try w.finish()
        } catch {
            w.abort()
            throw error
        }
    }

    /// Stores the content of the regular file at `path`, read in chunks; returns its SHA-256 (hex).
    @discardableResult
    public func put(fileAt path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BlobStoreError.io(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw BlobStoreError.io(path: path, operation: "stat", errno: errno) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw BlobStoreError.io(path: path, operation: "read (not a regular file)", errno: EINVAL) }
        guard Int(st.st_size) <= maxBlobSize else { throw BlobStoreError.tooLarge(limit: maxBlobSize) }
        let w = try makeWriter()
        do {
            try Self.readChunks(fd, path: path) { try w.write($0) }
            return try w.finish()
        } catch {
            w.abort()
            throw error
        }
    }

    /// Rehashes blob `sha`: true when its content still hashes to its name.
    public func verify(_ sha: String) throws -> Bool {
        let p = try path(sha)
        guard try contains(sha) else { throw BlobStoreError.notFound(sha256: sha) }
        return try Self.hashFile(p) == sha
    }

    /// Reads `fd` (opened from `path`, named in errors) to its end in 1 MiB chunks, retrying EINTR.
    static func readChunks(_ fd: Int32, path: String, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = read(fd, buffer.baseAddress, chunk)
            if n < 0 {
                if errno == EINTR { continue }
                throw BlobStoreError.io(path: path, operation: "read", errno: errno)
            }
            if n == 0 { return }
            try body(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
    }

    /// SHA-256 (hex) of a file, read in chunks.
    static func hashFile(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BlobStoreError.io(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        var hasher = SHA256()
        try readChunks(fd, path: path) { hasher.update(bufferPointer: $0) }
        return hex(hasher.finalize())
    }

    static func hex<D: Sequence>(_ bytes: D) -> String where D.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    // MARK: Client file names

    /// `name` when it can be used as a file name inside a job folder, else `invalidFileName`.
    /// Rejected: empty, more than 255 UTF-8 bytes, `/`, `\`, `..`, NUL or other control/format
    /// characters, a leading `.`, and an extension outside `allowedExtensions`.
    @discardableResult
    public static func validateFileName(_ name: String) throws -> String {
        func reject(_ reason: String) -> BlobStoreError { .invalidFileName(name, reason: reason) }
        guard !name.isEmpty else { throw reject("empty") }
        guard name.utf8.count <= 255 else { throw reject("longer than 255 bytes") }
        guard !name.contains("/"), !name.contains("\\") else { throw reject("contains a path separator") }
        guard !name.contains("..") else { throw reject("contains '..'") }
        for s in name.unicodeScalars {
            switch s.properties.generalCategory {
            case .control, .format, .lineSeparator, .paragraphSeparator, .surrogate, .privateUse, .unassigned:
                throw reject("contains a control character (U+\(String(s.value, radix: 16, uppercase: true)))")
            default: break
            }
        }
        guard !name.hasPrefix(".") else { throw reject("starts with '.'") }
        guard let dot = name.lastIndex(of: ".") else {
            throw reject("has no extension (allowed: \(allowedExtensions.sorted().joined(separator: ", ")))")
        }
        let ext = name[name.index(after: dot)...].lowercased()
        guard allowedExtensions.contains(ext) else {
            throw reject("extension '\(ext)' is not one of \(allowedExtensions.sorted().joined(separator: ", "))")
        }
        return name
    }

    /// `s` fit for an error message: control characters escaped, at most 120 characters.
    static func printable(_ s: String) -> String {
        var out = ""
        for scalar in s.unicodeScalars {
            if out.count >= 120 { out += "…"; break }
            switch scalar.properties.generalCategory {
            case .control, .format, .lineSeparator, .paragraphSeparator, .surrogate, .privateUse, .unassigned:
                out += "\\u{\(String(scalar.value, radix: 16))}"
            default:
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    // MARK: Job folders

    /// Fills `folder` (created 0700 when missing) with one file per entry of `blobs`
    /// (client file name → SHA-256), named by the validated client name and hard-linked to the blob
    /// (copied where links are impossible). Everything is checked before the first file is written;
    /// an existing file of the same name is replaced atomically. Returns the written paths, sorted.
    @discardableResult
    public func materialize(jobID: String, blobs: [String: String], into folder: String) throws -> [String] {
        let entries = blobs.sorted { $0.key < $1.key }
        var sources: [(name: String, source: String)] = []
        for (name, sha) in entries {
            try Self.validateFileName(name)
            let source = try path(sha)
            guard try contains(sha) else { throw BlobStoreError.notFound(sha256: sha) }
            sources.append((name, source))
        }
        try FileSystem.makeDirectory(folder, mode: 0o700)
        var written: [String] = []
        for (name, source) in sources {
            let target = folder + "/" + name
            if FileSystem.sameFile(source, target) {
                written.append(target)
                continue
            }
            let temp = folder + "/.cd-" + jobID.filter { $0.isLetter || $0.isNumber || $0 == "-" } + "-" + FileSystem.randomToken() + ".part"
            if link(source, temp) != 0 {
                try FileSystem.copyFile(from: source, to: temp)
            }
            if rename(temp, target) != 0 {
                let e = errno
                unlink(temp)
                throw BlobStoreError.io(path: target, operation: "rename", errno: e)
            }
            written.append(target)
        }
        return written
    }
}

/// Streams one blob into the store: `write` chunks (hashed and counted as they come), then
/// `finish` for its hash, or `abort`. Abandoning a writer removes its temporary file.
/// One writer is used by one task at a time.
public final class BlobWriter {
    let store: BlobStore
    let tempPath: String
    private var fd: Int32
    private var hasher = SHA256()
    public private(set) var byteCount = 0

    init(store: BlobStore) throws {
        self.store = store
        self.tempPath = store.temporaryDirectory + "/blob-" + FileSystem.randomToken() + ".part"
        fd = open(tempPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw BlobStoreError.io(path: tempPath, operation: "create", errno: errno) }
    }

    deinit { abort() }

    /// Appends bytes; `tooLarge` (and the writer aborted) past the store's limit.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard fd >= 0 else { throw BlobStoreError.writerClosed }
        guard byteCount + bytes.count <= store.maxBlobSize else {
            abort()
            throw BlobStoreError.tooLarge(limit: store.maxBlobSize)
        }
        hasher.update(bufferPointer: bytes)
        var offset = 0
        while offset < bytes.count {
            let n = posixWrite(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                let e = errno
                abort()
                throw BlobStoreError.io(path: tempPath, operation: "write", errno: e)
            }
            offset += n
        }
        byteCount += bytes.count
    }

    public func write(_ data: Data) throws {
        try data.withUnsafeBytes { try write($0) }
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Makes the blob durable and visible; returns its SHA-256 (hex). When the store already holds
    /// this content, the stored file is kept and the new copy is dropped.
    public func finish() throws -> String {
        guard fd >= 0 else { throw BlobStoreError.writerClosed }
        let sha = BlobStore.hex(hasher.finalize())
        defer { unlink(tempPath) }
        if fchmod(fd, 0o400) != 0 || fsync(fd) != 0 {
            let e = errno
            close(fd)
            fd = -1
            throw BlobStoreError.io(path: tempPath, operation: "fsync", errno: e)
        }
        close(fd)
        fd = -1
        let final = try store.path(sha)
        try FileSystem.makeDirectory(FileSystem.parent(final), mode: 0o700)
        if link(tempPath, final) != 0 {
            let e = errno
            if e == EEXIST { return sha }  // dedup: keep the stored one
            // File systems without hard links: rename, unless it appeared meanwhile.
            if try store.contains(sha) { return sha }
            guard rename(tempPath, final) == 0 else {
                throw BlobStoreError.io(path: final, operation: "link", errno: e)
            }
        }
        FileSystem.syncDirectory(FileSystem.parent(final))
        return sha
    }

    /// Drops what was written (idempotent).
    public func abort() {
        guard fd >= 0 else { return }
        close(fd)
        fd = -1
        unlink(tempPath)
    }
}

/// `write(2)`, out of the way of `BlobWriter.write`.
@inline(__always)
private func posixWrite(_ fd: Int32, _ buf: UnsafeRawPointer, _ n: Int) -> Int {
    write(fd, buf, n)
}

/// Small POSIX helpers shared by the stores.
enum FileSystem {
    /// `mkdir -p` with `mode` on every folder it creates and on `path` itself.
    static func makeDirectory(_ path: String, mode: mode_t) throws {
        var st = stat()
        if stat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFDIR else { throw BlobStoreError.io(path: path, operation: "mkdir (exists, not a folder)", errno: EEXIST) }
            if st.st_mode & 0o777 != mode, chmod(path, mode) != 0 {
                throw BlobStoreError.io(path: path, operation: "chmod", errno: errno)
            }
            return
        }
        let p = parent(path)
        if !p.isEmpty, p != path, p != "/" {
            var pst = stat()
            if stat(p, &pst) != 0 { try makeDirectory(p, mode: mode) }
        }
        if mkdir(path, mode) != 0 && errno != EEXIST {
            throw BlobStoreError.io(path: path, operation: "mkdir", errno: errno)
        }
        if chmod(path, mode) != 0 { throw BlobStoreError.io(path: path, operation: "chmod", errno: errno) }
    }

    static func parent(_ p: String) -> String {
        guard let slash = p.lastIndex(of: "/") else { return "." }
        let head = String(p[..<slash])
        return head.isEmpty ? "/" : head
    }

    /// Whether both paths name the same inode.
    static func sameFile(_ a: String, _ b: String) -> Bool {
        var sa = stat(), sb = stat()
        guard stat(a, &sa) == 0, stat(b, &sb) == 0 else { return false }
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
    }

    static func randomToken() -> String {
        var g = SystemRandomNumberGenerator()
        return String(g.next() as UInt64, radix: 16)
    }

    static func copyFile(from source: String, to target: String) throws {
        let input = open(source, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw BlobStoreError.io(path: source, operation: "open", errno: errno) }
        defer { close(input) }
        let output = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard output >= 0 else { throw BlobStoreError.io(path: target, operation: "create", errno: errno) }
        defer { close(output) }
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = read(input, buffer.baseAddress, chunk)
            if n < 0 {
                if errno == EINTR { continue }
                let e = errno
                unlink(target)
                throw BlobStoreError.io(path: source, operation: "read", errno: e)
            }
            if n == 0 { break }
            var off = 0
            while off < n {
                let m = posixWrite(output, buffer.baseAddress! + off, n - off)
                if m < 0 {
                    if errno == EINTR { continue }
                    let e = errno
                    unlink(target)
                    throw BlobStoreError.io(path: target, operation: "write", errno: e)
                }
                off += m
            }
        }
    }

    /// fsync of a folder, so a new entry survives a crash (best effort).
    static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }
}
