import CDModels
import CDTensor
import CDTraining
import Foundation
import Testing

/// CustomDiffusionTrainer on the fixture model and the cd_train batch (instance samples first,
/// then as many class samples): gradient accumulation, evaluation, v-prediction, training without
/// modifier tokens, a non-finite loss, and what the start-token detach changes.
@Suite(.serialized) struct TrainerBehaviourTests {
    let pipeline = UnitFixture.pipeline

    func makeTrainer(_ settings: TrainingSettings = TrainingSettings(), models: StableDiffusionModels? = nil,
                     tokens: [(name: String, initializer: String)] = [("<new1>", "ktn")]) throws -> CustomDiffusionTrainer {
        try CustomDiffusionTrainer(models: models ?? pipeline.models, tokenizer: pipeline.tokenizer, tokens: tokens, settings: settings)
    }

    /// Rows `rows` of a batch (copies), the first `instanceCount` of them instance samples.
    func gather(_ b: TrainingBatch, _ rows: [Int], instanceCount: Int) -> TrainingBatch {
        func g(_ t: Tensor) -> Tensor {
            let out = Tensor(zeros: [rows.count] + t.shape.dropFirst())
            for (i, r) in rows.enumerated() { out[i].copy(from: t[r]) }
            return out
        }
        return TrainingBatch(latents: g(b.latents), noise: g(b.noise), timesteps: rows.map { b.timesteps[$0] }, mask: g(b.mask),
                             ids: rows.map { b.ids[$0] }, instanceCount: instanceCount)
    }

    /// Copies of the current gradients: every trained UNet key, plus "<tokens>" when there are rows.
    func gradients(_ t: CustomDiffusionTrainer) -> [String: [Float]] {
        var out = Dictionary(uniqueKeysWithValues: t.trainableKeys.map { ($0, t.gradient(of: $0)!.array) })
        if t.tokenGradient.count > 0 { out["<tokens>"] = t.tokenGradient.array }
        return out
    }

    func weights(_ t: CustomDiffusionTrainer) -> [Float] {
        t.tokens.rows.array + t.trainableKeys.flatMap { t.parameter($0)!.array }
    }

    /// Per tensor: max |a − b| ≤ tolerance × max |b|, and b is not all zero.
    func expectSameGradients(_ a: [String: [Float]], _ b: [String: [Float]], _ what: String, tolerance: Float = 1e-5,
                             keys: [String]? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(Set(a.keys) == Set(b.keys), "\(what): different tensors", sourceLocation: sourceLocation)
        for key in (keys ?? b.keys.sorted()) {
            guard let x = a[key], let y = b[key], x.count == y.count else { continue }
            let scale = y.map(abs).max() ?? 0
            let err = zip(x, y).map { abs($0 - $1) }.max() ?? 0
            #expect(scale > 0, "\(what) \(key): gradient is all zero", sourceLocation: sourceLocation)
            #expect(err <= tolerance * scale, "\(what) \(key): max |difference| \(err) vs max |g| \(scale)", sourceLocation: sourceLocation)
        }
    }

    func relative(_ a: Double, _ b: Double) -> Double { abs(a - b) / max(abs(b), 1e-30) }

    // MARK: (a) gradient accumulation

    @Test func microBatchesWithWeightsAddUpToTheWholeBatch() throws {
        let c = try TrainCase("cd_train")
        let b = c.batch, n = b.instanceCount
        try #require(n >= 2 && b.count == 2 * n, "the case has as many class samples as instance samples")
        let trainer = try makeTrainer()
        trainer.zeroGradients()
        let whole = trainer.accumulateGradients(b)
        let wholeGrads = gradients(trainer)
        #expect(trainer.samplesSeen == 0, "only completed steps move the sample position")

        // [i_k, c_k] for each k, each weighted 1/n.
        trainer.zeroGradients()
        var loss = 0.0, instance = 0.0, prior = 0.0
        for k in 0..<n {
            let l = trainer.accumulateGradients(gather(b, [k, n + k], instanceCount: 1), weight: 1 / Double(n))
            loss += l.loss / Double(n)
            instance += l.instance / Double(n)
            prior += (l.prior ?? .nan) / Double(n)
        }
        expectSameGradients(gradients(trainer), wholeGrads, "accumulated micro-batches")
        #expect(relative(loss, whole.loss) <= 1e-6 && relative(instance, whole.instance) <= 1e-6 && relative(prior, whole.prior!) <= 1e-6,
                "losses: \(loss), \(instance), \(prior) vs \(whole)")

        // `step` weights its micro-batches 1/count itself: its clipped gradients equal the whole batch's, clipped.
        let viaStep = try makeTrainer(), viaWhole = try makeTrainer()
        let report = try viaStep.step((0..<n).map { gather(b, [$0, n + $0], instanceCount: 1) })
        let wholeReport = try viaWhole.step([b])
        #expect(relative(report.losses.loss, wholeReport.losses.loss) <= 1e-6)
        #expect(relative(report.update.gradientNorm, wholeReport.update.gradientNorm) <= 1e-5)
        expectSameGradients(gradients(viaStep), gradients(viaWhole), "step over micro-batches")
    }

    // MARK: (b) evaluation

    @Test func evaluateGivesTheTrainingLossAndChangesNothing() throws {
        let c = try TrainCase("cd_train")
        let trainer = try makeTrainer()
        trainer.zeroGradients()
        let trained = trainer.accumulateGradients(c.batch)
        let grads = gradients(trainer), w = weights(trainer), seen = trainer.samplesSeen
        let evaluated = trainer.evaluate(c.batch)
        #expect(relative(evaluated.loss, trained.loss) <= 1e-6, "\(evaluated.loss) vs \(trained.loss)")
        #expect(relative(evaluated.instance, trained.instance) <= 1e-6)
        #expect(evaluated.prior != nil && relative(evaluated.prior!, trained.prior!) <= 1e-6)
        #expect(gradients(trainer) == grads, "evaluate changed the gradients")
        #expect(weights(trainer) == w, "evaluate changed the weights")
        #expect(trainer.samplesSeen == seen && trainer.step == 0)
        // The class half really is in the loss: instance-only batches have no prior term.
        let instanceOnly = gather(c.batch, Array(0..<c.batch.instanceCount), instanceCount: c.batch.instanceCount)
        let l = trainer.evaluate(instanceOnly)
        #expect(l.prior == nil && relative(l.loss, trained.instance) <= 1e-6)
    }

    // MARK: (c) v-prediction

    @Test func vPredictionLossMatchesAHandComputedOne() throws {
        let c = try TrainCase("cd_train")
        let b = c.batch, n = b.instanceCount, count = b.count
        var models = pipeline.models
        models.scheduler.predictionType = "v_prediction"
        var settings = TrainingSettings()
        settings.priorLossWeight = 0.5
        let trainer = try makeTrainer(settings, models: models)
        #expect(trainer.noiseSchedule.config.prediction == .vPrediction)

        // x_t and v = √ᾱ·ε − √(1 − ᾱ)·x0 in double, from the schedule's ᾱ.
        let ac = trainer.noiseSchedule.alphasCumprod, per = b.latents.count / count
        let noisy = Tensor(zeros: b.latents.shape)
        var v = [Double](repeating: 0, count: b.latents.count)
        for s in 0..<count {
            let a = Double(ac[b.timesteps[s]]).squareRoot(), sd = (1 - Double(ac[b.timesteps[s]])).squareRoot()
            for i in (s * per)..<((s + 1) * per) {
                let x0 = Double(b.latents.pointer[i]), e = Double(b.noise.pointer[i])
                noisy.pointer[i] = Float(a * x0 + sd * e)
                v[i] = a * e - sd * x0
            }
        }
        let context = trainer.textEncoder.forward(ids: b.ids, embeddingOverride: trainer.tokens.override)
        let pred = trainer.unet.forward(sample: noisy, timesteps: b.timesteps.map(Float.init), context: context)
        // Instance: Σ_{c,h,w} (p − v)²·m / Σ_{h,w} m, mean over instance samples; prior: plain mean.
        let plane = b.mask.count / count
        func losses(_ target: (Int) -> Double) -> (instance: Double, prior: Double) {
            var instance = 0.0, prior = 0.0
            for s in 0..<count {
                var sum = 0.0, maskSum = 0.0
                for j in 0..<plane { maskSum += Double(b.mask.pointer[s * plane + j]) }
                for i in 0..<per {
                    let e = Double(pred.pointer[s * per + i]) - target(s * per + i)
                    sum += e * e * (s < n ? Double(b.mask.pointer[s * plane + i % plane]) : 1)
                }
                if s < n { instance += sum / maskSum / Double(n) } else { prior += sum / Double(per) / Double(count - n) }
            }
            return (instance, prior)
        }
        let mine = losses { v[$0] }
        let expected = mine.instance + 0.5 * mine.prior
        let got = trainer.evaluate(b)
        #expect(relative(got.loss, expected) <= 1e-5, "v-prediction loss \(got.loss) vs \(expected)")
        #expect(relative(got.instance, mine.instance) <= 1e-5 && relative(got.prior ?? .nan, mine.prior) <= 1e-5,
                "terms \(got.instance), \(String(describing: got.prior)) vs \(mine)")
        // The target matters: the ε-target loss of the same prediction is far off.
        let eps = losses { Double(b.noise.pointer[$0]) }
        #expect(relative(eps.instance + 0.5 * eps.prior, expected) > 1e-2, "ε and v losses coincide, the test would not notice")
        // The velocity helper agrees with the formula.
        let velocity = trainer.noiseSchedule.velocity(b.latents, noise: b.noise, timesteps: b.timesteps)
        let vScale = v.map(abs).max()!
        #expect(zip(velocity.array, v).allSatisfy { abs(Double($0) - $1) <= 1e-6 * vScale })

        // Training uses the same loss, and its gradient is the loss's: the token row (its gradient
        // is not affected by the start-token detach) against a central difference.
        trainer.zeroGradients()
        let trained = trainer.accumulateGradients(b)
        #expect(relative(trained.loss, got.loss) <= 1e-6)
        let g = trainer.tokenGradient, rows = trainer.tokens.rows
        var i = 0
        for j in 0..<g.count where abs(g.pointer[j]) > abs(g.pointer[i]) { i = j }
        let analytic = Double(g.pointer[i])
        try #require(abs(analytic) > 1e-3, "the token gradient is large enough to check")
        let original = rows.pointer[i], h: Float = abs(analytic) > 1e-2 ? 5e-3 : 2e-2
        rows.pointer[i] = original + h
        let up = trainer.evaluate(b).loss, upValue = rows.pointer[i]
        rows.pointer[i] = original - h
        let down = trainer.evaluate(b).loss, downValue = rows.pointer[i]
        rows.pointer[i] = original
        let fd = (up - down) / Double(upValue - downValue)
        #expect(abs(fd - analytic) <= 0.03 * abs(analytic) + 1e-4, "token gradient \(analytic) vs finite difference \(fd)")
    }

    // MARK: (d) no modifier tokens

    @Test func withoutTokensOnlyUNetTensorsTrain() throws {
        let c = try TrainCase("cd_train")
        var settings = TrainingSettings()
        settings.learningRate = 1e-3
        let trainer = try makeTrainer(settings, tokens: [])
        #expect(trainer.tokens.names.isEmpty && trainer.tokens.ids.isEmpty && trainer.tokens.initializerIDs.isEmpty)
        #expect(trainer.tokenGradient.count == 0 && trainer.tokens.rows.count == 0)
        #expect(trainer.tokenizer.vocabularySize == pipeline.tokenizer.vocabularySize, "no token was added")
        #expect(trainer.trainableKeys == (try TrainableSet.crossattnKV.keys(in: UnitFixture.unetSpecs)))

        // Prompts without a modifier token.
        var batch = c.batch
        let ids = trainer.tokenizer.encodePadded("photo of a dog", length: batch.ids[0].count)
        batch.ids = Array(repeating: ids, count: batch.count)
        let before = Dictionary(uniqueKeysWithValues: trainer.trainableKeys.map { ($0, trainer.parameter($0)!.array) })
        let report = try trainer.step([batch])
        #expect(report.step == 1 && report.losses.loss.isFinite)
        #expect(trainer.concept().tokens.isEmpty)

        // The first AdamW step with the (clipped) gradient g: p ← p·(1 − lr·wd) − lr·g/(|g| + eps).
        let lr = settings.learningRate, wd = settings.adam.weightDecay, eps = settings.adam.epsilon
        for key in trainer.trainableKeys {
            let g = trainer.gradient(of: key)!.array, p = trainer.parameter(key)!.array, p0 = before[key]!
            #expect(g.contains { $0 != 0 }, "\(key): no gradient")
            #expect(p != p0, "\(key) did not change")
            var worst = 0.0
            for i in p.indices {
                let expected = Double(p0[i]) * (1 - lr * wd) - lr * Double(g[i]) / (abs(Double(g[i])) + eps)
                worst = max(worst, abs(Double(p[i]) - expected) / (1e-3 * lr + 3e-7 * abs(Double(p0[i]))))
            }
            #expect(worst <= 1, "\(key): AdamW step off by \(worst) × the tolerance")
            // The loaded model and the trainer's base copy are untouched.
            #expect(pipeline.models.unet.weights[key].array == p0, "\(key): the loaded model changed")
            #expect(trainer.base[key]!.array == p0, "\(key): the base copy changed")
        }
    }

    // MARK: (e) a non-finite loss

    @Test func aNaNInTheLatentsStopsTheStepAndChangesNothing() throws {
        let c = try TrainCase("cd_train")
        let trainer = try makeTrainer()
        let before = weights(trainer)
        var bad = c.batch
        bad.latents = c.batch.latents.copy()
        bad.latents.pointer[bad.latents.count / 2] = .nan
        do {
            _ = try trainer.step([c.batch, bad])
            Issue.record("a NaN loss was trained on")
        } catch let TrainingError.nonFiniteLoss(step, loss) {
            #expect(step == 1 && loss.isNaN, "step \(step), loss \(loss)")
        }
        #expect(trainer.step == 0)
        #expect(weights(trainer) == before, "a failed step changed the weights")
        var infinite = c.batch
        infinite.noise = c.batch.noise.copy()
        infinite.noise.pointer[0] = .infinity
        #expect(throws: TrainingError.self) { try trainer.step([infinite]) }
        #expect(trainer.step == 0 && weights(trainer) == before)

        // Nothing of the failed steps (moments, step count) leaks into the next one: the same step
        // as a fresh trainer's, bit for bit.
        let fresh = try makeTrainer()
        _ = try trainer.step([c.batch])
        _ = try fresh.step([c.batch])
        #expect(trainer.step == 1)
        #expect(weights(trainer) == weights(fresh))
        #expect(weights(trainer) != before)
    }

    // MARK: (f) the start-token detach

    /// max over rows r of |d[r] − u_r·c| with u_r the least-squares coefficient: how far the [R, dim]
    /// matrix d is from the form u·cᵀ.
    func rankOneResidual(_ d: [Double], along c: [Float]) -> Double {
        let dim = c.count, norm2 = c.reduce(0.0) { $0 + Double($1) * Double($1) }
        var residual = 0.0
        for r in 0..<(d.count / dim) {
            let row = d[(r * dim)..<((r + 1) * dim)]
            let u = zip(row, c).reduce(0.0) { $0 + $1.0 * Double($1.1) } / norm2
            for (j, x) in row.enumerated() { residual = max(residual, abs(x - u * Double(c[j]))) }
        }
        return residual
    }

    /// Cross-attention K = context·W_kᵀ, so ∂L/∂W_k = Σ_positions dK[s]ᵀ·context[s]. Detaching K/V at
    /// position 0 drops exactly the s = 0 term, Σ_b dK_b[0]ᵀ·context_b[0]; context_b[0] is the BOS
    /// output, the same vector c0 for every prompt (causal text encoder), so the plain minus the
    /// detached gradient is rank one with right factor c0. Nothing else changes: the forward pass is
    /// the same, the Q/out gradients do not pass through K/V, and position 0 of the context does not
    /// depend on the modifier token, so its gradient is unchanged too.
    @Test func detachingTheStartTokenRemovesOnlyARankOneTermAlongItsContext() throws {
        let c = try TrainCase("cd_train")
        var settings = TrainingSettings()
        settings.trainable = .crossattn
        var results: [Bool: (grads: [String: [Float]], context: Tensor, loss: Double)] = [:]
        for detach in [true, false] {
            settings.detachStartToken = detach
            let trainer = try makeTrainer(settings)
            #expect(trainer.settings.detachStartToken == detach)
            trainer.zeroGradients()
            var context = Tensor(zeros: [1])
            let l = trainer.accumulateGradients(c.batch) { what, t in if what == "encoder_hidden_states" { context = t.copy() } }
            results[detach] = (gradients(trainer), context, l.loss)
        }
        let detached = results[true]!, plain = results[false]!
        #expect(detached.loss == plain.loss, "the forward pass does not depend on the detach")
        let keys = detached.grads.keys.sorted()
        let kv = keys.filter { $0.hasSuffix("attn2.to_k.weight") || $0.hasSuffix("attn2.to_v.weight") }
        let others = keys.filter { !kv.contains($0) }
        #expect(kv.count == 2 * UnitFixture.attn2Layers.count && others.contains("<tokens>"))
        expectSameGradients(detached.grads, plain.grads, "detach on vs off (Q, out, token)", keys: others)

        // c0: the same for every sample.
        let context = detached.context, dim = context.shape[2], b = context.shape[0]
        let c0 = context[0][0].array
        for s in 1..<b { #expect(context[s][0].array == c0, "position 0 of sample \(s) differs") }
        let c1 = context[0][1].array
        try #require(c0.contains { $0 != 0 } && c0 != c1)

        var dropped = 0.0, total = 0.0
        for key in kv {
            let gPlain = plain.grads[key]!, gDetached = detached.grads[key]!
            #expect(gPlain.count % dim == 0)
            let d = zip(gPlain, gDetached).map { Double($0) - Double($1) }
            let dMax = d.map(abs).max() ?? 0, gMax = Double(gPlain.map(abs).max() ?? 0)
            #expect(dMax > 1e-4 * gMax, "\(key): the detach changes nothing (\(dMax) of \(gMax))")
            // Each row r of the difference is u_r·c0 (measured ~2e-5 of max |difference| off).
            let residual = rankOneResidual(d, along: c0), elsewhere = rankOneResidual(d, along: c1)
            #expect(residual <= 1e-3 * dMax, "\(key): the removed term is not along c0 (residual \(residual), max |difference| \(dMax))")
            // …and not along another position's context (the check can tell positions apart).
            #expect(elsewhere > 0.1 * dMax, "\(key): the difference is also along position 1's context (residual \(elsewhere) of \(dMax))")
            dropped += d.reduce(0) { $0 + $1 * $1 }
            total += gPlain.reduce(0.0) { $0 + Double($1) * Double($1) }
        }
        print("start-token detach: removes \((dropped / total).squareRoot()) of the K/V gradient norm")
    }

    // MARK: (g) bf16 convolutions

    /// `ComputePrecision.bf16` validated on the loss curve: eight steps on the same batch (a high
    /// learning rate, so the weights move) in fp32 and with bf16 convolutions and frozen-weight
    /// linear products stay within 1 % of each other's loss at every step, and their weight updates
    /// within 10 % (AdamW's first steps are close to lr·sign(g), so the rounding of small gradient
    /// entries shows in full); they are not identical (the bf16 kernels ran).
    @Test(.enabled(if: ComputePrecision.bf16Supported, "bf16 convolutions need a CPU with AVX512_BF16"))
    func bf16ComputeFollowsTheFP32LossCurve() throws {
        let c = try TrainCase("cd_train")
        var settings = TrainingSettings()
        settings.learningRate = 1e-3
        let start = weights(try makeTrainer(settings))
        func curve(_ precision: ComputePrecision) throws -> (losses: [Double], update: [Float]) {
            try ComputePrecision.$scoped.withValue(precision) {
                let t = try makeTrainer(settings)
                let losses = try (0..<8).map { _ in try t.step([c.batch]).losses.loss }
                return (losses, zip(weights(t), start).map { $0 - $1 })
            }
        }
        let fp32 = try curve(.fp32), bf16 = try curve(.bf16)
        print("loss curve fp32: \(fp32.losses)\nloss curve bf16: \(bf16.losses)")
        #expect(fp32.losses.last! < fp32.losses.first!, "the fp32 run did not learn: \(fp32.losses)")
        for (step, (a, b)) in zip(bf16.losses, fp32.losses).enumerated() {
            #expect(relative(a, b) <= 0.01, "step \(step): bf16 loss \(a) vs fp32 \(b)")
        }
        #expect(bf16.losses != fp32.losses, "bf16 gave fp32's losses bit for bit: its kernels did not run")
        func norm(_ v: [Float]) -> Double { v.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot() }
        let gap = norm(zip(bf16.update, fp32.update).map { $0 - $1 }) / norm(fp32.update)
        print("bf16 weight update differs from fp32's by \(gap) of its norm")
        #expect(gap <= 0.1, "weight updates differ by \(gap) of the fp32 update's norm")
    }
}
