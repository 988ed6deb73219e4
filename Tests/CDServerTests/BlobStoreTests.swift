import CDProtocol
import CDTestSupport
import Foundation
import Testing
@testable import CDServer

@Suite("BlobStore")
struct BlobStoreTests {
    static let helloSHA = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    static let emptySHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    func makeStore(_ dir: String, max: Int = BlobStore.defaultMaxBlobSize) throws -> BlobStore {
        try BlobStore(directory: dir + "/blobs", temporaryDirectory: dir + "/tmp", maxBlobSize: max)
    }

    @Test("put stores by SHA-256 under ab/cdef…, read-only; the same content again is kept, not rewritten")
    func putAndDedup() async throws {
        try await withTemporaryDirectory { dir in
            let store = try makeStore(dir)
            let sha = try store.put(data: Data("hello".utf8))
            #expect(sha == Self.helloSHA)
            let path = try store.path(sha)
            #expect(path == dir + "/blobs/2c/f24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
            #expect(try store.contains(sha))
            #expect(try store.data(sha) == Data("hello".utf8))
            #expect(try store.size(sha) == 5)
            #expect(try permissions(path) == 0o400)
            #expect(try permissions(dir + "/blobs/2c") == 0o700)
            #expect(try store.verify(sha))

            let node = try inode(path)
            let modified = try FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date
            try await Task.sleep(for: .milliseconds(20))
            #expect(try store.put(data: Data("hello".utf8)) == sha)
            #expect(try inode(path) == node)
            #expect(try FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date == modified)
            #expect(entries(dir + "/tmp").isEmpty)
            #expect(allFiles(dir + "/blobs") == ["2c/f24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"])

            #expect(try store.put(data: Data()) == Self.emptySHA)
            #expect(try !store.contains(String(repeating: "0", count: 64)))
            #expect(throws: BlobStoreError.notFound(sha256: String(repeating: "0", count: 64))) {
                try store.verify(String(repeating: "0", count: 64))
            }
        }
    }

    @Test("put(fileAt:) and the streaming writer hash what put(data:) hashes")
    func streamingPaths() async throws {
        try await withTemporaryDirectory { dir in
            let store = try makeStore(dir)
            var bytes = [UInt8](repeating: 0, count: 3 << 20 | 12345)
            for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: i &* 2_654_435_761 >> 13) }
            let file = dir + "/upload.bin"
            try Data(bytes).write(to: URL(fileURLWithPath: file))
            let fromFile = try store.put(fileAt: file)
            let w = try store.makeWriter()
            var offset = 0
            while offset < bytes.count {
                let n = min(70_001, bytes.count - offset)
                try w.write(Array(bytes[offset..<offset + n]))
                offset += n
            }
            #expect(w.byteCount == bytes.count)
            let fromWriter = try w.finish()
            #expect(throws: BlobStoreError.writerClosed) { try w.write([1]) }
            let fromData = try store.put(data: Data(bytes))
            #expect(fromFile == fromData && fromWriter == fromData)
            #expect(try store.verify(fromFile))
            #expect(try store.data(fromFile) == Data(bytes))
            #expect(allFiles(dir + "/blobs").count == 1)
            #expect(entries(dir + "/tmp").isEmpty)

            // An abandoned writer leaves nothing behind.
            do {
                let abandoned = try store.makeWriter()
                try abandoned.write([1, 2, 3])
                withExtendedLifetime(abandoned) { #expect(entries(dir + "/tmp").count == 1) }
            }
            #expect(entries(dir + "/tmp").isEmpty)
            #expect(throws: BlobStoreError.self) { try store.put(fileAt: dir + "/missing.bin") }
            #expect(throws: BlobStoreError.self) { try store.put(fileAt: dir) }
        }
    }

    @Test("blobs over the size limit fail with tooLarge and leave nothing")
    func sizeLimit() async throws {
        try await withTemporaryDirectory { dir in
            let store = try makeStore(dir, max: 1000)
            let ok = try store.put(data: Data(repeating: 1, count: 1000))
            #expect(throws: BlobStoreError.tooLarge(limit: 1000)) { try store.put(data: Data(repeating: 2, count: 1001)) }
            let big = dir + "/big.bin"
            try Data(repeating: 3, count: 1001).write(to: URL(fileURLWithPath: big))
            #expect(throws: BlobStoreError.tooLarge(limit: 1000)) { try store.put(fileAt: big) }
            let w = try store.makeWriter()
            try w.write(Data(repeating: 4, count: 600))
            #expect(throws: BlobStoreError.tooLarge(limit: 1000)) { try w.write(Data(repeating: 4, count: 401)) }
            #expect(throws: BlobStoreError.writerClosed) { try w.finish() }
            #expect(allFiles(dir + "/blobs") == [String(ok.prefix(2)) + "/" + ok.dropFirst(2)])
            #expect(entries(dir + "/tmp").isEmpty)
            #expect(BlobStoreError.tooLarge(limit: 1000).httpStatus == 413)
            #expect(BlobStore.defaultMaxBlobSize == 64 * 1024 * 1024)
        }
    }

    @Test("hash strings other than 64 lowercase hex are rejected before touching the disk",
          arguments: ["../../etc/passwd", "", String(repeating: "a", count: 63), String(repeating: "a", count: 65),
                      helloSHA.uppercased(), String(repeating: "g", count: 64), "2c/" + String(repeating: "a", count: 61),
                      String(repeating: "a", count: 62) + "/.", String(repeating: "a", count: 63) + "\u{0}",
                      "../" + String(repeating: "a", count: 61)])
    func badSHA(_ sha: String) async throws {
        try await withTemporaryDirectory { dir in
            let store = try makeStore(dir)
            #expect(!BlobStore.isValidSHA(sha))
            #expect(throws: BlobStoreError.invalidSHA(sha)) { try store.path(sha) }
            #expect(throws: BlobStoreError.invalidSHA(sha)) { try store.contains(sha) }
            #expect(throws: BlobStoreError.invalidSHA(sha)) { try store.verify(sha) }
            #expect(throws: BlobStoreError.invalidSHA(sha)) { try store.data(sha) }
            #expect(throws: BlobStoreError.invalidSHA(sha)) {
                try store.materialize(jobID: "j-aaaaaaaaaaaa", blobs: ["a.jpg": sha], into: dir + "/out")
            }
            #expect(entries(dir + "/blobs").isEmpty)
            #expect(!FileManager.default.fileExists(atPath: dir + "/out"))
        }
    }

    @Test("verify notices a blob whose content changed")
    func verifyDetectsCorruption() async throws {
        try await withTemporaryDirectory { dir in
            let store = try makeStore(dir)
            let sha = try store.put(data: Data("hello".utf8))
            let path = try store.path(sha)
            #expect(chmod(path, 0o600) == 0)
            try Data("jello".utf8).write(to: URL(fileURLWithPath: path))
            #expect(try !store.verify(sha))
        }
    }

    @Test("unsafe client file names are rejected",
          arguments: ["", ".", "..", "../a.jpg", "a/../../b.jpg", "a/b.jpg", "/etc/passwd", "a\\b.jpg", "..\\a.jpg",
                      "a..b.jpg", ".hidden.jpg", ".jpg", "a\u{0}.jpg", "a\nb.jpg", "a\rb.png", "tab\there.jpg", "del\u{7f}.jpg",
                      "c1\u{85}.jpg", "evil\u{202e}gpj.txt", "zw\u{200b}.jpg", String(repeating: "a", count: 252) + ".jpg",
                      String(repeating: "é", count: 126) + ".jpg", "noextension", "a.exe", "a.jpg.sh", "a.", "a.gif", "a.JPG ", "a.svg"])
    func badFileNames(_ name: String) throws {
        #expect(throws: BlobStoreError.self) { try BlobStore.validateFileName(name) }
        do {
            try BlobStore.validateFileName(name)
        } catch let e as BlobStoreError {
            #expect(!e.description.contains("\u{0}") && !e.description.contains("\n"))
        }
    }

    @Test("ordinary client file names are accepted as they are",
          arguments: ["a.jpg", "IMG_0001.JPG", "photo 1.png", "café.webp", "猫.jpeg", "a.b.jpeg", "00.txt", "x-y_z(1).Png",
                      String(repeating: "a", count: 251) + ".jpg"])
    func goodFileNames(_ name: String) throws {
        #expect(try BlobStore.validateFileName(name) == name)
    }

    @Test("materialize writes a job folder from blobs under the client names, all or nothing")
    func materialize() async throws {
        try await withTemporaryDirectory { dir in
            let store = try makeStore(dir)
            let a = try store.put(data: Data("image a".utf8))
            let cap = try store.put(data: Data("a photo of a dog".utf8))
            let folder = dir + "/jobs/j-aaaaaaaaaaaa/images"
            let written = try store.materialize(jobID: "j-aaaaaaaaaaaa", blobs: ["a.jpg": a, "a.txt": cap, "b.JPG": a], into: folder)
            #expect(written == [folder + "/a.jpg", folder + "/a.txt", folder + "/b.JPG"])
            #expect(entries(folder) == ["a.jpg", "a.txt", "b.JPG"])
            #expect(FileManager.default.contents(atPath: folder + "/a.txt") == Data("a photo of a dog".utf8))
            #expect(FileManager.default.contents(atPath: folder + "/b.JPG") == Data("image a".utf8))
            #expect(try permissions(folder) == 0o700)
            // Again: same result, no temporary files left.
            #expect(try store.materialize(jobID: "j-aaaaaaaaaaaa", blobs: ["a.jpg": a], into: folder) == [folder + "/a.jpg"])
            #expect(entries(folder) == ["a.jpg", "a.txt", "b.JPG"])
            // A file of the same name with other content is replaced.
            #expect(try store.materialize(jobID: "j-aaaaaaaaaaaa", blobs: ["a.jpg": cap], into: folder).count == 1)
            #expect(FileManager.default.contents(atPath: folder + "/a.jpg") == Data("a photo of a dog".utf8))
            #expect(try store.data(a) == Data("image a".utf8))  // the blob itself is untouched

            let other = dir + "/other"
            #expect(throws: BlobStoreError.self) {
                try store.materialize(jobID: "j-aaaaaaaaaaaa", blobs: ["ok.jpg": a, "../escape.jpg": a], into: other)
            }
            #expect(throws: BlobStoreError.notFound(sha256: String(repeating: "c", count: 64))) {
                try store.materialize(jobID: "j-aaaaaaaaaaaa", blobs: ["ok.jpg": a, "z.jpg": String(repeating: "c", count: 64)], into: other)
            }
            #expect(!FileManager.default.fileExists(atPath: other))
            #expect(!FileManager.default.fileExists(atPath: dir + "/escape.jpg"))
        }
    }

    @Test("concurrent puts of the same content store one blob")
    func concurrentPuts() async throws {
        try await withTemporaryDirectory { dir in
            let store = try makeStore(dir)
            let payload = Data((0..<200_000).map { UInt8(truncatingIfNeeded: $0 * 7) })
            let shas = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<8 { group.addTask { try store.put(data: payload) } }
                var out: [String] = []
                for try await s in group { out.append(s) }
                return out
            }
            #expect(Set(shas).count == 1)
            #expect(allFiles(dir + "/blobs").count == 1)
            #expect(entries(dir + "/tmp").isEmpty)
            #expect(try store.verify(shas[0]))
        }
    }
}
