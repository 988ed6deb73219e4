import CDModels
import CDTensor
import Foundation

/// `cdtrainerd bench unet`: forward time of an SD1.5-size UNet with random weights (no files),
/// FLOPs counted by the kernels, and the ratio to the sgemm throughput measured in the same run.
struct UNetBenchmark {
    let resolution: Int
    let batch: Int
    let repeats: Int

    struct Report: Codable {
        let resolution: Int
        let batch: Int
        let seconds: Double
        let gflop: Double
        let gflops: Double
        let sgemmGflops: Double
        let ratioToSgemm: Double
        let flopsByKind: [String: Double]
        let peakRssBytes: Int
        let threads: Int
    }

    func run(progress: (String) -> Void) throws -> Report {
        let sgemm = measureSgemm()
        progress(String(format: "sgemm: %.1f GFLOP/s", sgemm))
        let config = UNet2DConditionConfig.sd15
        progress("building an SD1.5 UNet with random weights…")
        let unet = try UNet2DConditionModel(config: config, weights: randomWeights(UNet2DConditionModel.parameterSpecs(config)))
        var rng = SplitMix64(seed: 7)
        let latent = resolution / 8
        let sample = rng.normalTensor([batch, config.inChannels, latent, latent])
        let context = rng.normalTensor([batch, 77, config.crossAttentionDim])
        let timesteps = [Float](repeating: 500, count: batch)

        _ = unet.forward(sample: sample, timesteps: timesteps, context: context)  // warm-up
        FlopCounter.reset()
        FlopCounter.isEnabled = true
        _ = unet.forward(sample: sample, timesteps: timesteps, context: context)
        FlopCounter.isEnabled = false
        let counted = FlopCounter.totals
        let flops = counted.values.reduce(0, +)

        var best = Double.infinity
        for i in 0..<repeats {
            let start = DispatchTime.now().uptimeNanoseconds
            _ = unet.forward(sample: sample, timesteps: timesteps, context: context)
            let s = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            best = min(best, s)
            progress(String(format: "run %d: %.3f s", i + 1, s))
        }
        let gflops = flops / best / 1e9
        return Report(resolution: resolution, batch: batch, seconds: best, gflop: flops / 1e9, gflops: gflops,
                      sgemmGflops: sgemm, ratioToSgemm: gflops / sgemm,
                      flopsByKind: Dictionary(uniqueKeysWithValues: counted.map { ($0.key.name, $0.value) }),
                      peakRssBytes: peakRSS(), threads: ThreadPool.shared.threadCount)
    }
}

/// Random weights for a parameter table, so benchmarks need no model files: Uniform(±1/√fan_in)
/// for weights, ones for norm scales, zeros for biases.
func randomWeights(_ specs: [ParameterSpec], seed: UInt64 = 1) -> Weights {
    var rng = SplitMix64(seed: seed)
    var tensors: [String: Tensor] = [:]
    for spec in specs {
        let t = Tensor(zeros: spec.shape)
        if spec.key.hasSuffix(".bias") {
            // zeros
        } else if spec.shape.count == 1 {
            t.fill(1)
        } else {
            let bound = 1 / Float(spec.shape.dropFirst().reduce(1, *)).squareRoot()
            for i in 0..<t.count { t.pointer[i] = rng.uniform(-bound, bound) }
        }
        tensors[spec.key] = t
    }
    return Weights(tensors: tensors).frozen()
}

/// sgemm GFLOP/s on an n² product, best of `repeats` after a warm-up.
func measureSgemm(size n: Int = 3072, repeats: Int = 3) -> Double {
    var rng = SplitMix64(seed: 3)
    let a = rng.uniformTensor([n, n]), b = rng.uniformTensor([n, n]), c = Tensor(zeros: [n, n])
    var best = Double.infinity
    for i in 0...repeats {
        let start = DispatchTime.now().uptimeNanoseconds
        BLAS.gemm(m: n, n: n, k: n, a: a.pointer, lda: n, b: b.pointer, ldb: n, c: c.pointer, ldc: n)
        let s = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        if i > 0 { best = min(best, s) }
    }
    return 2 * Double(n) * Double(n) * Double(n) / best / 1e9
}

/// Peak resident set size of this process (getrusage reports KiB on Linux).
func peakRSS() -> Int {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Int(usage.ru_maxrss) * 1024
}
