/// Why `ConceptCompression.compress` refuses its arguments (file problems are `ConceptFormatError`s).
public enum CompressionError: Error, CustomStringConvertible, Equatable {
    /// The ratio is not in (0, 1].
    case ratio(Double)
    /// The output name says neither `.concept.safetensors` nor `.delta.safetensors`.
    case outputName(file: String)
    /// The input needs the base model (`--model`): full weights to turn into deltas, key names or a
    /// base fingerprint to produce; `reason` says which.
    case needsBase(file: String, reason: String)
    /// The input holds no UNet tensors (an embedding file).
    case nothingToCompress(file: String)

    public var description: String {
        switch self {
        case let .ratio(r): return "the ratio must be in (0, 1] (the share of the sum of singular values to keep), got \(r)"
        case let .outputName(f):
            return "\(f): the output name must end in \(ConceptCompression.bundleSuffix) (a cdtrainer bundle) or \(A1111ConceptFormat.deltaSuffix) (an A1111 delta)"
        case let .needsBase(f, r): return "\(f): give the base model with --model: \(r)"
        case let .nothingToCompress(f): return "\(f): holds no UNet tensors to compress (an embedding file)"
        }
    }
}
