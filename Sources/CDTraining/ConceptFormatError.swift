import CDModels
import CDTensor
import Foundation

/// What is wrong with a concept file (or with applying it); every case names the file.
public enum ConceptFormatError: Error, CustomStringConvertible, Equatable {
    /// Not readable as safetensors: missing, truncated, bad header (the reader's reason).
    case unreadable(file: String, reason: String)
    /// A PyTorch zip/pickle file (`torch.save`): not read, convert it to safetensors.
    case pickle(file: String)
    /// A readable safetensors file that is none of the concept formats; `found` = its first tensor names.
    case notAConcept(file: String, found: [String])
    /// A concept file whose content contradicts its format.
    case malformed(file: String, reason: String)
    /// Trained tensors the target format cannot store.
    case unsupportedTensors(file: String, format: String, keys: [String])
    case writeFailed(file: String, reason: String)
    /// A bundle's deltas were taken against other base weights than the pipeline's.
    case baseMismatch(file: String, bundle: String, pipeline: String)
    /// A modifier token the pipeline's tokenizer already has.
    case tokenExists(file: String, token: String, id: Int)
    /// The concept does not fit the pipeline (unknown UNet keys, shapes, embedding width).
    case incompatible(file: String, reason: String)

    public var description: String {
        switch self {
        case let .unreadable(f, r): return "\(f): not a readable safetensors file: \(r)"
        case let .pickle(f):
            return "\(f): a PyTorch pickle file (torch.save); only safetensors concept files are read — convert it, e.g. with safetensors.torch.save_file"
        case let .notAConcept(f, found):
            return "\(f): not a concept file (expected a cdtrainer bundle, diffusers pytorch_custom_diffusion_weights, an A1111 .delta.safetensors or a one-tensor embedding); tensors: \(found.joined(separator: ", "))"
        case let .malformed(f, r): return "\(f): \(r)"
        case let .unsupportedTensors(f, format, keys): return "\(f): \(format) cannot store \(keys.joined(separator: ", "))"
        case let .writeFailed(f, r): return "\(f): cannot write: \(r)"
        case let .baseMismatch(f, b, p):
            return "\(f): made for other base weights: the bundle's base_fingerprint is \(b), the pipeline's base weights for its keys give \(p)"
        case let .tokenExists(f, t, id): return "\(f): token '\(t)' is already in the pipeline's tokenizer (id \(id))"
        case let .incompatible(f, r): return "\(f): does not fit this pipeline: \(r)"
        }
    }
}
