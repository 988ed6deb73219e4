import CDProtocol
import Crypto
import Foundation

/// Submitting a job file: the local images it names are uploaded as blobs (only those the daemon
/// does not hold yet: `HEAD` by SHA-256 first), then the spec rewritten by `JobUpload.plan` is
/// submitted with a `submission_id`, so repeating the whole submission (after a lost answer, or a
/// rerun with the same id) never makes a second job.
public struct JobSubmission: Sendable {
    /// The spec as submitted (blob names instead of local paths).
    public var spec: JobSpec
    /// The files to upload, by blob name.
    public var files: [JobUpload.File]
    public var submissionID: String

    /// Plans the submission of a resolved spec (`JobSpec.load`).
    public init(spec: JobSpec, submissionID: String = UUID().uuidString.lowercased()) throws {
        let planned: (spec: JobSpec, files: [JobUpload.File])
        do {
            planned = try JobUpload.plan(spec)
        } catch {
            // `load` checked the class folders exist; this is a folder that cannot be listed.
            let folder = spec.concepts.compactMap(\.classImages).first { (try? FileManager.default.contentsOfDirectory(atPath: $0)) == nil }
            throw ClientFileError(path: folder ?? "class images", message: "cannot list the folder: \((error as NSError).localizedDescription)")
        }
        self.spec = planned.spec
        self.files = planned.files
        self.submissionID = submissionID
    }

    /// Uploads the files and submits the job.
    public func submit(with client: APIClient, progress: (@Sendable (UploadProgress) -> Void)? = nil) async throws -> (result: SubmitResult, uploads: UploadReport) {
        let uploads = try await client.upload(files, progress: progress)
        let result = try await client.submit(SubmitJobRequest(spec: spec, blobs: uploads.blobs, submissionID: submissionID))
        return (result, uploads)
    }
}

/// What `APIClient.upload` did.
public struct UploadReport: Sendable, Equatable {
    /// Blob name → SHA-256, for every file.
    public var blobs: [String: String] = [:]
    /// Names of the files whose content was sent.
    public var uploaded: [String] = []
    /// Names of the files the daemon held already (same content).
    public var alreadyStored: [String] = []
    public var bytesUploaded = 0
}

/// One file handled by `APIClient.upload`.
public struct UploadProgress: Sendable, Equatable {
    public var name: String
    /// 1-based position among `total` files.
    public var index: Int
    public var total: Int
    public var bytes: Int
    /// false: the daemon had the content already.
    public var sent: Bool
}

extension APIClient {
    /// Uploads each file whose content the daemon does not hold (files with equal content are
    /// sent once) and returns every file's hash.
    public func upload(_ files: [JobUpload.File], progress: (@Sendable (UploadProgress) -> Void)? = nil) async throws -> UploadReport {
        var report = UploadReport()
        var onServer = Set<String>()  // hashes known to be on the daemon
        for (i, file) in files.enumerated() {
            let data: Data
            do {
                data = try Data(contentsOf: URL(fileURLWithPath: file.path))
            } catch {
                throw ClientFileError(path: file.path, message: "cannot read: \((error as NSError).localizedDescription)")
            }
            let sha = Self.sha256(data)
            report.blobs[file.name] = sha
            let onDaemon: Bool
            if onServer.contains(sha) { onDaemon = true } else { onDaemon = try await blobExists(sha) }
            if onDaemon {
                report.alreadyStored.append(file.name)
            } else {
                let answer = try await uploadBlob(data)
                guard answer.sha256 == sha, answer.size == data.count else {
                    throw APIClientError.badResponse(
                        "the daemon stored \(file.path) as \(answer.sha256) (\(answer.size) bytes), expected \(sha) (\(data.count) bytes)")
                }
                report.uploaded.append(file.name)
                report.bytesUploaded += data.count
            }
            onServer.insert(sha)
            progress?(UploadProgress(name: file.name, index: i + 1, total: files.count, bytes: data.count, sent: !onDaemon))
        }
        return report
    }

    /// Lowercase hex SHA-256, the blob store's name for `data`.
    public static func sha256(_ data: Data) -> String {
        SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }
}
