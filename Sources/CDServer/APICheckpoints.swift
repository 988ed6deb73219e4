import CDProtocol
import Foundation
import Hummingbird
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Checkpoints: listed from the store's `checkpoint` events; their files are served from the
/// checkpoint folder, which must lie inside the job's folder of the state directory (a path
/// recorded as relative is relative to that folder). Requested file paths are checked component by
/// component: no `..`, `.`, empty or encoded-separator components, and no symlinks anywhere.
extension APIHandlers {
    func checkpoints(_ id: String) throws -> Response {
        let jobDir = try state.jobDirectory(id)
        let list = try state.jobs.checkpoints(id).map { c -> CheckpointInfo in
            var p = c.path
            if p.hasPrefix(jobDir + "/") { p = String(p.dropFirst(jobDir.count + 1)) }
            return CheckpointInfo(step: c.step, path: p, time: c.time)
        }
        return try APIServer.json(list)
    }

    /// The real path of the checkpoint folder of `step`, checked to be a folder inside the job's folder.
    func checkpointFolder(_ id: String, step: Int) throws -> String {
        guard let record = try state.jobs.checkpoints(id).last(where: { $0.step == step }) else {
            throw APIError(.notFound, "job \(id) has no checkpoint at step \(step)")
        }
        let jobDir = try state.jobDirectory(id)
        let gone = APIError(.notFound, "the files of checkpoint \(step) of job \(id) are not on the server")
        guard let realJob = Self.realPath(jobDir) else { throw gone }
        let candidate = record.path.hasPrefix("/") ? record.path : jobDir + "/" + record.path
        guard let real = Self.realPath(candidate) else { throw gone }
        guard real.hasPrefix(realJob + "/") else {
            throw APIError(.notFound, "checkpoint \(step) of job \(id) lies outside the job's folder and is not served")
        }
        var st = stat()
        guard stat(real, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { throw gone }
        return real
    }

    func checkpointFiles(_ id: String, step: Int) throws -> Response {
        let folder = try checkpointFolder(id, step: step)
        var files: [CheckpointFile] = []
        func walk(_ dir: String, _ prefix: String) {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return }
            for name in names.sorted() {
                let full = dir + "/" + name
                var st = stat()
                guard lstat(full, &st) == 0 else { continue }
                switch st.st_mode & S_IFMT {
                case S_IFREG: files.append(CheckpointFile(path: prefix + name, size: Int(st.st_size)))
                case S_IFDIR: walk(full, prefix + name + "/")
                default: continue  // symlinks and special files are never listed nor served
                }
            }
        }
        walk(folder, "")
        return try APIServer.json(files)
    }

    func checkpointFile(_ id: String, step: Int, components raw: [String]) throws -> Response {
        let folder = try checkpointFolder(id, step: step)
        let bad = APIError(.badRequest, "file path must be relative to the checkpoint folder, without '..', '.' or empty parts")
        guard !raw.isEmpty else { throw bad }
        var path = folder
        for (i, r) in raw.enumerated() {
            guard let c = r.removingPercentEncoding, !c.isEmpty, c != ".", c != "..",
                  !c.contains("/"), !c.contains("\\"), !c.contains("\0")
            else { throw bad }
            path += "/" + c
            var st = stat()
            guard lstat(path, &st) == 0 else { throw APIError(.notFound, "no file '\(BlobStore.printable(raw.joined(separator: "/")))' in checkpoint \(step)") }
            let type = st.st_mode & S_IFMT
            if type == S_IFLNK { throw APIError(.notFound, "'\(BlobStore.printable(raw.joined(separator: "/")))' is a link and is not served") }
            if i < raw.count - 1 ? type != S_IFDIR : type != S_IFREG {
                throw APIError(.notFound, "no file '\(BlobStore.printable(raw.joined(separator: "/")))' in checkpoint \(step)")
            }
        }
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw BlobStoreError.io(path: path, operation: "open", errno: errno) }
        let file = OpenFile(fd: fd)
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw APIError(.notFound, "no file '\(BlobStore.printable(raw.joined(separator: "/")))' in checkpoint \(step)")
        }
        let size = Int(st.st_size)
        let filePath = path
        var headers = HTTPFields()
        headers[.contentType] = "application/octet-stream"
        let body = ResponseBody(contentLength: size) { writer in
            var remaining = size
            let chunk = 1 << 20
            while remaining > 0 {
                var buffer = ByteBufferAllocator().buffer(capacity: min(chunk, remaining))
                let n = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: min(chunk, remaining)) { ptr -> Int in
                    while true {
                        let n = read(file.fd, ptr.baseAddress, min(chunk, remaining, ptr.count))
                        if n < 0, errno == EINTR { continue }
                        if n < 0 { throw BlobStoreError.io(path: filePath, operation: "read", errno: errno) }
                        return n
                    }
                }
                if n == 0 { break }  // truncated meanwhile: the client sees a short body
                remaining -= n
                try await writer.write(buffer)
            }
            file.close()
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }

    static func realPath(_ p: String) -> String? {
        guard let r = realpath(p, nil) else { return nil }
        defer { free(r) }
        return String(cString: r)
    }
}

/// A file descriptor closed once (at `close()` or deinit).
final class OpenFile: @unchecked Sendable {
    private let lock = NSLock()
    private var _fd: Int32
    init(fd: Int32) { _fd = fd }
    var fd: Int32 { lock.withLock { _fd } }
    func close() {
        lock.withLock {
            if _fd >= 0 {
                closeDescriptor(_fd)
                _fd = -1
            }
        }
    }
    deinit { close() }
}

private func closeDescriptor(_ fd: Int32) { _ = close(fd) }
