import ArgumentParser
import CDModels
import CDTensor
import Foundation

/// `cdtrainerd bench load`: how much memory loading a UNet checkpoint takes against its final
/// fp32 size. `--synthesize DIR` first writes an SD1.5-size UNet folder with random weights.
struct LoadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Peak memory of loading a diffusers unet/ folder, relative to its fp32 size.")

    @Option(help: "A diffusers unet/ folder to load (run in a fresh process for a clean peak).")
    var unet: String?

    @Option(help: "Write an SD1.5-size unet/ folder with random weights here, then exit.")
    var synthesize: String?

    @Option(help: "Storage type for --synthesize: f32, f16 or bf16.")
    var dtype = "f16"

    func validate() throws {
        guard (unet == nil) != (synthesize == nil) else { throw ValidationError("give exactly one of --unet or --synthesize") }
        guard SafetensorsWriter.StoredType(rawValue: dtype.uppercased()) != nil else { throw ValidationError("--dtype must be f32, f16 or bf16") }
    }

    func run() throws {
        if let synthesize {
            let dir = URL(fileURLWithPath: synthesize, isDirectory: true)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try JSONEncoder().encode(UNet2DConditionConfig.sd15).write(to: dir.appendingPathComponent("config.json"))
            var writer = SafetensorsWriter(metadata: ["format": "pt"])
            var rng = SplitMix64(seed: 1)
            for spec in UNet2DConditionModel.parameterSpecs(.sd15) {
                writer.add(spec.key, rng.uniformTensor(spec.shape, -0.05, 0.05), as: SafetensorsWriter.StoredType(rawValue: dtype.uppercased())!)
            }
            try writer.write(to: dir.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
            print(dir.path)
            return
        }
        let start = Date()
        let model = try UNet2DConditionModel.load(directory: URL(fileURLWithPath: unet!, isDirectory: true))
        // Touch every weight, as a forward pass would.
        var checksum: Float = 0
        for t in model.weights.tensors.values { checksum += t.pointer[t.count - 1] }
        let final = model.weights.tensors.values.reduce(0) { $0 + $1.count * 4 }
        let peak = peakRSS()
        print(String(format: "loaded in %.1f s: fp32 weights %.2f GB, peak RSS %.2f GB = %.3f x the fp32 size (checksum %g)",
                     Date().timeIntervalSince(start), Double(final) / 1e9, Double(peak) / 1e9, Double(peak) / Double(final), checksum))
    }
}
