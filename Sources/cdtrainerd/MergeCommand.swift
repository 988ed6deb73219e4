import ArgumentParser
import CDModels
import CDTraining
import Foundation

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Merge single-concept results into one set of K/V weights (closed form, paper §3.2).",
        discussion: """
            Each input is a crossattn_kv result with at most one modifier token: our bundle, a diffusers output \
            folder (or its weights file with the <token> file beside it), or an A1111 delta with its embedding. \
            Tokens are renamed <new1>, <new2>, … in input order (recorded in the output's metadata). The output \
            format follows OUT: NAME.concept.safetensors (our bundle), NAME.delta.safetensors (A1111), else a \
            diffusers folder.
            """)

    @Option(help: "The base model the inputs were trained on (diffusers folder or single file).")
    var model: String

    @Option(help: "A file of regularization captions, one per line (default: the 1000 shipped with cdtrainer).")
    var captions: String?

    @Option(help: "Category words of each input's prompts, '+'-separated in input order (default: each bundle's class prompt).")
    var categories: String?

    @Flag(help: "Print the report as one JSON object.")
    var json = false

    @Argument(help: "The merged output (see above).")
    var out: String

    @Argument(help: "The concept files to merge (one or more; one gives that concept with its token renamed <new1>).")
    var inputs: [String]

    func validate() throws {
        guard inputs.count >= 1 else { throw ValidationError("give at least one input concept file") }
        if let categories, categories.split(separator: "+", omittingEmptySubsequences: false).count != inputs.count {
            throw ValidationError("--categories has \(categories.split(separator: "+", omittingEmptySubsequences: false).count) entries for \(inputs.count) inputs")
        }
    }

    func run() throws {
        let words = categories.map { $0.split(separator: "+", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) } }
        let list = try zip(inputs, inputs.indices).map { path, i in
            ConceptMerge.Input(concept: try ConceptFile.load(path), category: words?[i])
        }
        let pipeline = try StableDiffusionPipeline.load(model)
        let (merged, report) = try ConceptMerge.merge(list, captions: try RegularizationCaptions.load(captions), pipeline: pipeline)
        let written = try Self.write(merged, to: out)
        if json {
            let data = try JSONEncoder().encode(report)
            print(String(decoding: data, as: UTF8.self))
        } else {
            for (pair, source) in zip(report.tokens, report.inputs) where !pair[0].isEmpty {
                print("\(source): \(pair[0]) → \(pair[1])")
            }
            print(String(format: "%d target rows, %d regularization rows from %d captions, %d layers", report.targetRows,
                         report.regularizationRows, report.captions, report.layers))
            print(String(format: "condition (reciprocal, 1-norm): C_regᵀC_reg %.2e%@, d C_tᵀ %.2e%@", report.regularizationRcond,
                         report.regularizationRidge > 0 ? String(format: " (ridge %.2e added)", report.regularizationRidge) : "",
                         report.targetRcond, report.targetRidge > 0 ? String(format: " (ridge %.2e added)", report.targetRidge) : ""))
            print(String(format: "largest constraint residual ‖Ŵ C_tᵀ − V_tᵀ‖/‖V_tᵀ‖: %.2e", report.constraintResidual))
            for path in written { print(path) }
        }
    }

    /// Writes by the output's name: bundle, A1111 delta (+ embedding beside it), or diffusers folder.
    static func write(_ concept: TrainedConcept, to out: String) throws -> [String] {
        let url = URL(fileURLWithPath: out)
        let name = url.lastPathComponent
        if name.hasSuffix(".concept.safetensors") {
            try ConceptBundle.write(concept, to: url)
            return [url.path]
        }
        if name.hasSuffix(".delta.safetensors") {
            return try A1111ConceptFormat.write(concept, name: String(name.dropLast(".delta.safetensors".count)),
                                                to: url.deletingLastPathComponent()).map(\.path)
        }
        return try DiffusersConceptFormat.write(concept, to: url).map(\.path)
    }
}
