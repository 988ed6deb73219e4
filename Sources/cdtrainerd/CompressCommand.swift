import ArgumentParser
import CDModels
import CDTraining
import Foundation

/// `cdtrainerd compress IN OUT --ratio R [--model BASE]`: low-rank compression of a concept's K/V
/// deltas (`ConceptCompression`), with a per-layer report.
struct CompressCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compress",
        abstract: "Compress a concept's K/V deltas to low-rank factors (truncated SVD).",
        discussion: """
            Keeps, per K/V weight, the leading singular values whose sum reaches RATIO of the sum of all \
            (1 keeps every nonzero one). OUT ending in .concept.safetensors writes a cdtrainer bundle, \
            .delta.safetensors an A1111 delta with "delta_factors" (and the token embeddings beside it). \
            --model is needed for full-weight inputs (diffusers files, a bundle's unet_full tensors), to \
            convert between bundle and A1111 key names, and checks a bundle's base fingerprint.
            """)

    @Argument(help: "The concept: a bundle, an A1111 .delta.safetensors, or a diffusers output folder or weights file.")
    var input: String

    @Argument(help: "The output: NAME.concept.safetensors or NAME.delta.safetensors.")
    var output: String

    @Option(help: "Share of the sum of singular values to keep, in (0, 1].")
    var ratio = 0.6

    @Option(help: "The base model the concept was trained on: a diffusers folder or a single-file .safetensors checkpoint.")
    var model: String?

    @Option(help: "For a single-file --model: a diffusers folder whose configs to use (default: SD 1.5).")
    var configs: String?

    @Flag(help: "Print the report as one JSON object.")
    var json = false

    func validate() throws {
        guard ratio > 0, ratio <= 1 else { throw ValidationError("--ratio must be in (0, 1], got \(ratio)") }
    }

    func run() throws {
        let base = try model.map { try StableDiffusionPipeline.load($0, configs: configs).models.unet }
        let report = try ConceptCompression.compress(input, to: output, ratio: ratio, base: base)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
            return
        }
        print("\(report.input) → \(report.output) (\(report.format), ratio \(report.ratio))")
        for layer in report.layers {
            let shape = layer.shape.map(String.init).joined(separator: "×")
            print(String(format: "  %@  %@  rank %d/%d  rel. error %.3e", layer.key, shape, layer.rank, layer.fullRank, layer.relativeError))
        }
        for key in report.unchanged { print("  \(key)  unchanged") }
        if !report.tokens.isEmpty { print("tokens: \(report.tokens.joined(separator: ", "))") }
        let change = report.reduction >= 1 ? String(format: "%.2f× smaller", report.reduction) : String(format: "%.2f× larger", 1 / report.reduction)
        print("input \(report.inputBytes) bytes, output \(report.outputBytes) bytes (\(report.files.joined(separator: ", "))): \(change)")
    }
}
