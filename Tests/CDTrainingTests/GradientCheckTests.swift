import CDTestSupport
import CDModels
import CDTensor
import CDTraining
import Testing

/// Whole-model gradients (text encoder + UNet + loss) against central finite differences of the
/// loss, with the start-token detach off (the detach is not the derivative of the loss; the
/// parity tests pin it). Every UNet parameter trains (pattern "*"), so each layer's weight
/// gradient is checked at its largest entry, plus sampled K/V entries and the modifier token.
@Suite(.serialized) struct GradientCheckTests {
    @Test func everyUNetParameterAndTheTokenMatchFiniteDifferences() throws {
        let c = try TrainCase("cd_train")
        var s = TrainingSettings()
        s.trainable = .patterns(["*"])
        s.detachStartToken = false
        s.maxGradNorm = nil
        let pipeline = try StableDiffusionPipeline.load(Fixtures.model.path)
        let trainer = try CustomDiffusionTrainer(models: pipeline.models, tokenizer: pipeline.tokenizer,
                                                 tokens: [("<new1>", "ktn")], settings: s)
        #expect(trainer.trainableKeys.count == UNet2DConditionModel.parameterSpecs(pipeline.models.unet.config).count)
        // One instance and one class sample: both loss terms, half the cost of the case's batch.
        let n = c.batch.instanceCount, pick = [0, n]
        let batch = TrainingBatch(latents: gather(c.batch.latents, pick), noise: gather(c.batch.noise, pick),
                                  timesteps: pick.map { c.batch.timesteps[$0] }, mask: gather(c.batch.mask, pick),
                                  ids: pick.map { c.batch.ids[$0] }, instanceCount: 1)
        trainer.zeroGradients()
        trainer.accumulateGradients(batch)

        var checks: [(String, Tensor, Tensor, Int)] = []  // (name, parameter, gradient, element)
        for key in trainer.trainableKeys {
            let g = trainer.gradient(of: key)!
            #expect(g.array.contains { $0 != 0 }, "\(key): gradient is all zero")
            checks.append((key, trainer.parameter(key)!, g, largest(g)))
        }
        var rng = SplitMix64(seed: 7)
        for key in trainer.trainableKeys where key.hasSuffix("attn2.to_k.weight") || key.hasSuffix("attn2.to_v.weight") {
            let g = trainer.gradient(of: key)!
            for _ in 0..<1 { checks.append((key + " (sampled)", trainer.parameter(key)!, g, Int(rng.next() % UInt64(g.count)))) }
        }
        checks.append(("<new1> row", trainer.tokens.rows, trainer.tokenGradient, largest(trainer.tokenGradient)))

        var worst = 0.0
        for (name, p, g, i) in checks {
            // Large gradients get a small step (truncation error ∝ h²), small ones a large step (rounding ∝ 1/h).
            let original = p.pointer[i], h: Float = abs(g.pointer[i]) > 1e-2 ? 5e-3 : 2e-2
            p.pointer[i] = original + h
            let up = trainer.evaluate(batch).loss, upValue = p.pointer[i]
            p.pointer[i] = original - h
            let down = trainer.evaluate(batch).loss, downValue = p.pointer[i]
            p.pointer[i] = original
            let fd = (up - down) / Double(upValue - downValue), analytic = Double(g.pointer[i])
            // Float32 rounding of the loss (~1.5e-6 of ~5) over 2h leaves 4e-5 (h = 0.02) to 1.5e-4
            // (h = 0.005, only where |g| > 0.01, so within the relative part) of noise.
            let err = abs(fd - analytic), allowed = 0.03 * abs(analytic) + 1e-4
            worst = max(worst, err / allowed)
            #expect(err <= allowed, "\(name)[\(i)]: analytic \(analytic) vs finite difference \(fd) (|error| \(err), allowed 0.03·|g| + 1e-4)")
        }
        print("gradient check: \(checks.count) entries, worst error \(worst) of the allowance")
    }

    private func gather(_ t: Tensor, _ rows: [Int]) -> Tensor {
        let out = Tensor(zeros: [rows.count] + t.shape.dropFirst())
        for (i, r) in rows.enumerated() { out[i].copy(from: t[r]) }
        return out
    }

    private func largest(_ t: Tensor) -> Int {
        var best = 0
        for i in 0..<t.count where abs(t.pointer[i]) > abs(t.pointer[best]) { best = i }
        return best
    }
}
