import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Writing downloads into the user's folders: whole files or nothing (a temporary file in the
/// same folder, renamed into place), and never outside the folder asked for.
public enum LocalFiles {
    /// `root/components…`, with every folder between created. Refuses a path that is not made of
    /// plain components (`CheckpointSelection.safeComponents`) and any existing link or non-folder
    /// on the way, so nothing is written outside `root`.
    public static func destination(root: String, relativePath: String) throws -> String {
        guard let parts = CheckpointSelection.safeComponents(relativePath) else {
            throw ClientFileError(path: relativePath, message: "refusing to write a file whose path leaves the output folder")
        }
        try makeFolder(root)
        var path = root.hasSuffix("/") ? String(root.dropLast()) : root
        for folder in parts.dropLast() {
            path += "/" + folder
            switch kind(path) {
            case .missing:
                do {
                    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
                } catch {
                    throw ClientFileError(path: path, message: "cannot create the folder: \((error as NSError).localizedDescription)")
                }
            case .folder: continue
            case .link: throw ClientFileError(path: path, message: "is a symbolic link; refusing to write through it")
            case .other: throw ClientFileError(path: path, message: "exists and is not a folder")
            }
        }
        let target = path + "/" + parts[parts.count - 1]
        if kind(target) == .folder { throw ClientFileError(path: target, message: "is a folder; cannot write the file there") }
        return target
    }

    /// Writes `data` to `path` atomically.
    public static func write(_ data: Data, to path: String) throws {
        let temp = temporaryPath(for: path)
        guard FileManager.default.createFile(atPath: temp, contents: data) else {
            throw ClientFileError(path: path, message: "cannot write (is the folder writable?)")
        }
        try putInPlace(temp, at: path)
    }

    /// Moves a finished download (anywhere, possibly another file system) to `path` atomically.
    public static func move(_ file: URL, to path: String) throws {
        let temp = temporaryPath(for: path)
        do {
            try FileManager.default.moveItem(atPath: file.path, toPath: temp)
        } catch {
            try? FileManager.default.removeItem(atPath: temp)
            throw ClientFileError(path: path, message: "cannot write: \((error as NSError).localizedDescription)")
        }
        try putInPlace(temp, at: path)
    }

    /// Creates `path` and its parents when missing; it must end up a folder.
    public static func makeFolder(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw ClientFileError(path: path, message: "cannot create the folder: \((error as NSError).localizedDescription)")
        }
    }

    /// A hidden name beside `path`, so the rename stays on one file system.
    static func temporaryPath(for path: String) -> String {
        let url = URL(fileURLWithPath: path)
        return url.deletingLastPathComponent().path + "/." + url.lastPathComponent + ".part-" + UUID().uuidString.prefix(8)
    }

    static func putInPlace(_ temp: String, at path: String) throws {
        guard rename(temp, path) == 0 else {
            let message = String(cString: strerror(errno))
            unlink(temp)
            throw ClientFileError(path: path, message: "cannot put the file in place: \(message)")
        }
    }

    enum Kind { case missing, folder, link, other }

    static func kind(_ path: String) -> Kind {
        var st = stat()
        guard lstat(path, &st) == 0 else { return .missing }
        switch st.st_mode & S_IFMT {
        case S_IFDIR: return .folder
        case S_IFLNK: return .link
        default: return .other
        }
    }
}
