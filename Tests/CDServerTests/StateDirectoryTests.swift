import CDProtocol
import Foundation
import Testing
@testable import CDServer

@Suite("StateDirectory")
struct StateDirectoryTests {
    @Test("creates blobs/, jobs/, tmp/ and the database, every folder 0700 (also a pre-existing root)")
    func layout() async throws {
        try await withTemporaryDirectory { dir in
            let root = dir + "/state"
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: false,
                                                    attributes: [.posixPermissions: 0o755])
            let state = try StateDirectory(path: root)
            defer { try? state.close() }
            for sub in ["", "/blobs", "/jobs", "/tmp"] {
                #expect(try permissions(root + sub) == 0o700, "\(root + sub)")
            }
            #expect(FileManager.default.fileExists(atPath: root + "/cdtrainerd.sqlite"))
            #expect(state.databasePath == root + "/cdtrainerd.sqlite")
            #expect(state.blobs.directory == root + "/blobs")
        }
    }

    @Test("a second open of the same directory is refused until the first is closed")
    func lock() async throws {
        try await withTemporaryDirectory { dir in
            let first = try StateDirectory(path: dir + "/state")
            #expect(throws: StateDirectoryError.self) { try StateDirectory(path: dir + "/state") }
            try first.close()
            let second = try StateDirectory(path: dir + "/state")
            try second.close()
        }
    }

    @Test("job folders only for well-formed job ids")
    func jobDirectories() async throws {
        try await withStateDirectory { state in
            let id = JobID.random()
            #expect(try state.jobDirectory(id) == state.root + "/jobs/" + id)
            let made = try state.createJobDirectory(id)
            #expect(try permissions(made) == 0o700)
            for bad in ["..", "../../etc", "j-../../../x", "", "j-AAAAAAAAAAAA", "j-aaaaaaaaaaaa/.."] {
                #expect(throws: JobStoreError.notFound(jobID: bad)) { try state.jobDirectory(bad) }
            }
        }
    }

    @Test("a submitted job's images are materialized into jobs/<id>/images")
    func materializeImages() async throws {
        try await withStateDirectory { state in
            let img = try state.blobs.put(data: Data("pixels".utf8))
            let txt = try state.blobs.put(data: Data("caption".utf8))
            let job = try state.jobs.submit(spec: sampleSpec(), blobs: ["01.png": img, "01.txt": txt], submissionID: nil).job
            let folder = try state.materializeImages(of: job.id)
            #expect(folder == state.root + "/jobs/" + job.id + "/images")
            #expect(entries(folder) == ["01.png", "01.txt"])
            #expect(FileManager.default.contents(atPath: folder + "/01.txt") == Data("caption".utf8))
            #expect(throws: JobStoreError.self) { try state.materializeImages(of: job.id, subfolder: "../x") }
        }
    }

    @Test("partial uploads left by a crash are removed at open")
    func staleTemporaryFiles() async throws {
        try await withTemporaryDirectory { dir in
            var state = try StateDirectory(path: dir + "/state")
            let w = try state.blobs.makeWriter()
            try w.write([1, 2, 3])
            let stale = w.tempPath
            #expect(FileManager.default.fileExists(atPath: stale))
            try state.close()
            state = try StateDirectory(path: dir + "/state")
            #expect(!FileManager.default.fileExists(atPath: stale))
            w.abort()
            try state.close()
        }
    }
}
