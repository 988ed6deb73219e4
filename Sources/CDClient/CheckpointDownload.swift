import CDProtocol
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The files of one checkpoint written into a local folder by `APIClient.downloadCheckpoint`.
public struct CheckpointDownload: Sendable, Equatable {
    public var jobID: String
    public var step: Int
    public var files: [File]

    /// A file as listed by the daemon, and where it was written.
    public struct File: Sendable, Equatable {
        public var file: CheckpointFile
        public var localPath: String
    }
}

/// What `downloadCheckpoint` did not find.
public enum CheckpointNotFound: Error, CustomStringConvertible, Sendable, Equatable {
    case noCheckpoints(jobID: String)
    case noSuchStep(jobID: String, step: Int, available: [Int])
    case noFiles(jobID: String, step: Int, format: CheckpointFormat, listed: [String])

    public var description: String {
        switch self {
        case let .noCheckpoints(id):
            return "job \(id) has no checkpoint yet (one is written every checkpoint_every steps; `cdctl status \(id)` shows the step)"
        case let .noSuchStep(id, step, available):
            return "job \(id) has no checkpoint at step \(step); it has: \(available.map(String.init).joined(separator: ", "))"
        case let .noFiles(id, step, format, listed):
            return "checkpoint \(step) of job \(id) has no \(format.rawValue) files (the job's `outputs` decide which formats are written); "
                + "it holds: \(listed.joined(separator: ", "))"
        }
    }
}

extension APIClient {
    /// Downloads the files of `format` of the checkpoint at `step` (newest when nil) into `folder`,
    /// keeping their relative paths; each file is written whole or not at all.
    public func downloadCheckpoint(
        _ id: String, step: Int? = nil, format: CheckpointFormat, withState: Bool = false, into folder: String,
        progress: (@Sendable (CheckpointFile) -> Void)? = nil
    ) async throws -> CheckpointDownload {
        let checkpoint = try await checkpoint(id, step: step)
        let listed = try await checkpointFiles(id, step: checkpoint.step)
        let chosen = CheckpointSelection.files(listed, format: format, withState: withState)
        guard !chosen.isEmpty else {
            throw CheckpointNotFound.noFiles(jobID: id, step: checkpoint.step, format: format, listed: listed.map(\.path))
        }
        // Every path is checked before the first byte is written.
        for f in chosen where CheckpointSelection.safeComponents(f.path) == nil {
            throw ClientFileError(path: f.path, message: "refusing to write a file whose path leaves the output folder")
        }
        var result = CheckpointDownload(jobID: id, step: checkpoint.step, files: [])
        for f in chosen {
            progress?(f)
            let path = try await downloadCheckpointFile(id, step: checkpoint.step, file: f, into: folder)
            result.files.append(.init(file: f, localPath: path))
        }
        return result
    }

    /// The checkpoint at `step`, or the newest when nil; `CheckpointNotFound` when there is none.
    public func checkpoint(_ id: String, step: Int?) async throws -> CheckpointInfo {
        let list = try await checkpoints(id)
        guard let found = CheckpointSelection.checkpoint(list, step: step) else {
            guard let step, !list.isEmpty else { throw CheckpointNotFound.noCheckpoints(jobID: id) }
            throw CheckpointNotFound.noSuchStep(jobID: id, step: step, available: list.map(\.step))
        }
        return found
    }

    /// Downloads one listed checkpoint file to `folder`/`file.path` atomically and checks its size.
    public func downloadCheckpointFile(_ id: String, step: Int, file: CheckpointFile, into folder: String) async throws -> String {
        let target = try LocalFiles.destination(root: folder, relativePath: file.path)
        let path = APIPaths.checkpointFile(try checkedID(id), step: step, relativePath: file.path)
        let request = try self.request("GET", path, accept: "application/octet-stream", timeout: Self.transferTimeout)
        let (temp, status) = try await withRetry {
            let (url, response) = try await Self.session.download(for: request)
            guard let http = response as? HTTPURLResponse else { throw APIClientError.badResponse("not an HTTP answer") }
            return (url, http.statusCode)
        }
        defer { try? FileManager.default.removeItem(at: temp) }
        if status >= 400 {
            let body = (try? Data(contentsOf: temp)) ?? Data()
            try Self.check(Answer(status: status, data: body, contentType: nil))
        }
        let size = ((try? FileManager.default.attributesOfItem(atPath: temp.path))?[.size] as? NSNumber)?.intValue ?? -1
        guard size == file.size else {
            throw APIClientError.badResponse(
                "\(file.path): got \(size) bytes, the listing says \(file.size) (changed on the daemon meanwhile? try again)")
        }
        try LocalFiles.move(temp, to: target)
        return target
    }
}
