/// What `ConceptCompression.compress` did: per factored layer the rank kept and the reconstruction
/// error of the stored factors, and the sizes. Encodes to the JSON that `cdtrainerd compress --json` prints.
public struct CompressionReport: Codable, Sendable, Equatable {
    public struct Layer: Codable, Sendable, Equatable {
        /// As written in the output (diffusers key in a bundle, LDM key in an A1111 delta).
        public var key: String
        /// [out, in]
        public var shape: [Int]
        public var rank: Int
        /// min(out, in)
        public var fullRank: Int
        /// ‖ΔW − US·Vh‖_F / ‖ΔW‖_F with the factors as stored (after F16 rounding for A1111) and the
        /// product as the loader forms it (float32); 0 for a zero ΔW.
        public var relativeError: Double
    }

    public var input: String
    public var output: String
    /// "bundle" or "a1111".
    public var format: String
    public var ratio: Double
    public var layers: [Layer]
    /// Keys stored as they were (not K/V weights: q/out and biases of `crossattn` concepts).
    public var unchanged: [String]
    public var tokens: [String]
    /// Every file written: the output, and for A1111 one embedding file per token.
    public var files: [String]
    /// Bytes of the input file (for a diffusers folder, its .safetensors/.bin files).
    public var inputBytes: Int
    /// Bytes of all `files`.
    public var outputBytes: Int
    /// inputBytes / outputBytes.
    public var reduction: Double
}
