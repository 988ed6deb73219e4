/// Why an image could not be read. `description` is "<file>: <what is wrong>".
public struct ImageError: Error, CustomStringConvertible, Equatable {
    public enum Kind: String, Sendable, Equatable {
        /// The file could not be opened or read (missing, a directory, permissions, I/O error).
        case unreadable
        /// The file has no bytes.
        case empty
        /// The bytes are not a JPEG, PNG or WebP image.
        case unrecognized
        /// A known image format or variant this decoder does not handle (GIF, animated WebP, …).
        case unsupported
        /// Declared dimensions over the limits (`ImageDecoder.maxSide`, `ImageDecoder.maxPixels`),
        /// refused before any pixel memory is allocated.
        case tooLarge
        /// The data ends before the image does.
        case truncated
        /// The image data is malformed.
        case corrupt
    }

    /// The path (or the name given to `ImageDecoder.decode(data:name:)`).
    public var file: String
    public var kind: Kind
    /// What is wrong, in words (decoder messages included).
    public var reason: String

    public init(file: String, kind: Kind, reason: String) {
        self.file = file
        self.kind = kind
        self.reason = reason
    }

    public var description: String { "\(file): \(reason)" }
}
