import CDModels
import CDTensor
import CDTraining
import Foundation
import Testing

/// AdamW against a naive double-precision PyTorch AdamW, gradient clipping, learning-rate
/// schedules, and the settings' effective rates and validation.
@Suite struct OptimizerTests {
    // MARK: AdamW

    /// PyTorch `torch.optim.AdamW` (single tensor), in double, one element at a time.
    struct ReferenceAdamW {
        var p: [Double], m: [Double], v: [Double]
        init(_ p: [Float]) { self.p = p.map(Double.init); m = Array(repeating: 0, count: p.count); v = m }
        mutating func step(_ g: [Float], t: Int, lr: Double, b1: Double, b2: Double, eps: Double, wd: Double) {
            let bc1 = 1 - pow(b1, Double(t)), bc2 = 1 - pow(b2, Double(t))
            for i in p.indices {
                let gi = Double(g[i])
                p[i] *= 1 - lr * wd
                m[i] = b1 * m[i] + (1 - b1) * gi
                v[i] = b2 * v[i] + (1 - b2) * gi * gi
                p[i] -= lr / bc1 * m[i] / (v[i].squareRoot() / bc2.squareRoot() + eps)
            }
        }
    }

    private func expectClose(_ actual: [Float], _ expected: [Double], _ what: String, relative: Double,
                             sourceLocation: SourceLocation = #_sourceLocation) {
        let scale = max(expected.map(abs).max() ?? 0, 1e-30)
        var worst = 0.0, at = 0
        for i in expected.indices where !(abs(Double(actual[i]) - expected[i]) <= worst) { worst = abs(Double(actual[i]) - expected[i]); at = i }
        #expect(worst <= relative * scale,
                "\(what): max |error| \(worst) at \(at) (\(actual[at]) vs \(expected[at])) > \(relative) × \(scale)",
                sourceLocation: sourceLocation)
    }

    @Test func adamWMatchesPyTorchsFormulaWithTwoGroups() {
        let hyper = AdamW.Hyperparameters(beta1: 0.85, beta2: 0.995, epsilon: 1e-8, weightDecay: 0.1)
        let rates = [3e-2, 7e-3]
        var rng = SplitMix64(seed: 2024)
        // Group 0: two tensors; group 1 (added between them, as the trainer's token rows): one.
        let shapes: [(String, [Int], Int)] = [("a", [7, 5], 0), ("tokens", [2, 6], 1), ("b", [13], 0)]
        let opt = AdamW(hyper)
        var params: [Tensor] = [], grads: [Tensor] = [], refs: [ReferenceAdamW] = []
        for (name, shape, group) in shapes {
            let p = rng.normalTensor(shape), g = Tensor(zeros: shape)
            opt.add(name, parameter: p, gradient: g, group: group)
            params.append(p); grads.append(g); refs.append(ReferenceAdamW(p.array))
        }
        let initial = params.map(\.array)
        #expect(opt.slots.map(\.name) == ["a", "tokens", "b"] && opt.slots.map(\.group) == [0, 1, 0])
        for t in 1...5 {
            for (k, g) in grads.enumerated() {
                for i in 0..<g.count {
                    // Mostly O(1) gradients; some zero, some far below eps, some large.
                    let r = rng.uniform()
                    g.pointer[i] = r < 0.1 ? 0 : r < 0.2 ? rng.normal() * 1e-10 : r < 0.3 ? rng.normal() * 50 : rng.normal()
                }
                refs[k].step(g.array, t: t, lr: rates[shapes[k].2], b1: hyper.beta1, b2: hyper.beta2, eps: hyper.epsilon, wd: hyper.weightDecay)
            }
            opt.update(rates: rates)
            #expect(opt.step == t)
            for (k, p) in params.enumerated() {
                expectClose(p.array, refs[k].p, "step \(t) \(shapes[k].0) parameters", relative: 1e-6)
                expectClose(opt.slots[k].m.array, refs[k].m, "step \(t) \(shapes[k].0) first moment", relative: 1e-6)
                expectClose(opt.slots[k].v.array, refs[k].v, "step \(t) \(shapes[k].0) second moment", relative: 1e-6)
            }
        }
        // The comparison is not vacuous: each tensor moved by several × its group's lr.
        for (k, p) in params.enumerated() {
            let moved = zip(p.array, initial[k]).map { abs(Double($0) - Double($1)) }.max() ?? 0
            #expect(moved > 2 * rates[shapes[k].2], "\(shapes[k].0) moved \(moved)")
        }
    }

    /// With zero gradients the moments stay zero and the Adam term is 0/(0 + eps) = 0, so each
    /// step only applies the decoupled decay (1 − lr·wd), to every group with its own rate.
    @Test func weightDecayAppliesToBothGroups() {
        let hyper = AdamW.Hyperparameters(weightDecay: 0.5)
        let opt = AdamW(hyper)
        var rng = SplitMix64(seed: 3)
        let p0 = rng.normalTensor([4, 3]), p1 = rng.normalTensor([5])
        let before = (p0.array, p1.array)
        opt.add("model", parameter: p0, gradient: Tensor(zeros: [4, 3]), group: 0)
        opt.add("tokens", parameter: p1, gradient: Tensor(zeros: [5]), group: 1)
        let rates = [0.1, 0.02]
        for _ in 0..<3 { opt.update(rates: rates) }
        for (p, initial, lr) in [(p0, before.0, rates[0]), (p1, before.1, rates[1])] {
            let factor = pow(1 - lr * hyper.weightDecay, 3)
            expectClose(p.array, initial.map { Double($0) * factor }, "decay at lr \(lr)", relative: 1e-6)
        }
        // And without weight decay nothing moves at all.
        let still = AdamW(AdamW.Hyperparameters(weightDecay: 0))
        let q = rng.normalTensor([6]), q0 = q.array
        still.add("q", parameter: q, gradient: Tensor(zeros: [6]), group: 0)
        still.update(rates: [0.1])
        #expect(q.array == q0)
    }

    // MARK: Gradient clipping

    private func randomGradients(_ rng: inout SplitMix64, scale: Float = 1) -> [Tensor] {
        [[3, 4], [5], [2, 2, 2]].map { shape in
            let t = rng.normalTensor(shape)
            for i in 0..<t.count { t.pointer[i] *= scale }
            return t
        }
    }

    private func l2(_ gs: [Tensor]) -> Double {
        gs.reduce(0.0) { s, g in g.array.reduce(s) { $0 + Double($1) * Double($1) } }.squareRoot()
    }

    @Test func clippingReturnsTheGlobalNormAndScalesOnlyWhenNeeded() {
        var rng = SplitMix64(seed: 5)
        let gs = randomGradients(&rng), original = gs.map(\.array), norm = l2(gs)
        #expect(norm > 1)

        // Below the maximum: untouched.
        let (n1, c1) = clipGradientNorm(gs, maxNorm: 2 * norm)
        #expect(abs(n1 - norm) <= 1e-12 * norm && c1 == 1)
        #expect(gs.map(\.array) == original)
        // No maximum: untouched, but the norm is still reported.
        let (n2, c2) = clipGradientNorm(gs, maxNorm: nil)
        #expect(abs(n2 - norm) <= 1e-12 * norm && c2 == 1)
        #expect(gs.map(\.array) == original)

        // Above: every tensor × max / (norm + 1e-6).
        let maxNorm = norm / 4
        let (n3, c3) = clipGradientNorm(gs, maxNorm: maxNorm)
        let expected = maxNorm / (norm + 1e-6)
        #expect(abs(n3 - norm) <= 1e-12 * norm, "the norm before clipping")
        #expect(abs(c3 - expected) <= 1e-15, "coefficient \(c3) vs \(expected)")
        for (g, o) in zip(gs, original) {
            for (a, b) in zip(g.array, o) { #expect(abs(Double(a) - Double(b) * expected) <= 1e-6 * abs(Double(b) * expected) + 1e-12) }
        }
        let after = l2(gs)
        #expect(abs(after - maxNorm) <= 1e-5 * maxNorm, "norm after clipping \(after) vs \(maxNorm)")
        // Clipping again at the same maximum barely changes anything (coefficient max/(max + 1e-6)).
        let (n4, c4) = clipGradientNorm(gs, maxNorm: maxNorm)
        #expect(abs(n4 - after) <= 1e-12 * after && abs(c4 - maxNorm / (after + 1e-6)) <= 1e-15)
    }

    /// The 1e-6 in the denominator matters for tiny gradients: norm 1e-6 with max 1e-6 halves them.
    @Test func clippingEpsilonAndZeroGradients() {
        var rng = SplitMix64(seed: 8)
        let raw = randomGradients(&rng)
        let s = Float(1e-6 / l2(raw))
        let gs = raw.map { g in let t = g.copy(); for i in 0..<t.count { t.pointer[i] *= s }; return t }
        let norm = l2(gs), original = gs.map(\.array)
        #expect(abs(norm - 1e-6) < 1e-11)
        let (_, c) = clipGradientNorm(gs, maxNorm: 1e-6)
        #expect(abs(c - 1e-6 / (norm + 1e-6)) <= 1e-12 && abs(c - 0.5) < 1e-4, "coefficient \(c)")
        for (g, o) in zip(gs, original) {
            for (a, b) in zip(g.array, o) { #expect(abs(Double(a) - Double(b) * c) <= 1e-6 * abs(Double(b))) }
        }
        let zeros = [Tensor(zeros: [3]), Tensor(zeros: [2, 2])]
        let (zn, zc) = clipGradientNorm(zeros, maxNorm: 1)
        #expect(zn == 0 && zc == 1 && zeros.allSatisfy { $0.array.allSatisfy { $0 == 0 } })
        let (en, ec) = clipGradientNorm([], maxNorm: 1)
        #expect(en == 0 && ec == 1)
    }

    // MARK: Learning-rate schedules

    @Test func scheduleFactors() {
        for s in [0, 1, 7, 1000] { #expect(LearningRateSchedule.constant.factor(at: s) == 1) }

        let warm = LearningRateSchedule.constantWithWarmup(warmup: 4)
        #expect((0...7).map { warm.factor(at: $0) } == [0, 0.25, 0.5, 0.75, 1, 1, 1, 1])
        #expect(LearningRateSchedule.constantWithWarmup(warmup: 0).factor(at: 0) == 1)
        #expect(LearningRateSchedule.constantWithWarmup(warmup: 1).factor(at: 0) == 0)
        #expect(LearningRateSchedule.constantWithWarmup(warmup: 1).factor(at: 1) == 1)

        // diffusers get_linear_schedule_with_warmup: step/warmup, then (total − step)/(total − warmup), ≥ 0.
        let linear = LearningRateSchedule.linear(warmup: 2, total: 10)
        let expected: [Double] = [0, 0.5, 1, 7.0 / 8, 6.0 / 8, 5.0 / 8, 0.5, 3.0 / 8, 2.0 / 8, 1.0 / 8, 0, 0, 0]
        for (s, e) in expected.enumerated() {
            #expect(abs(linear.factor(at: s) - e) <= 1e-15, "linear(2, 10) at step \(s): \(linear.factor(at: s)) vs \(e)")
        }
        let noWarm = LearningRateSchedule.linear(warmup: 0, total: 4)
        #expect((0...5).map { noWarm.factor(at: $0) } == [1, 0.75, 0.5, 0.25, 0, 0])
    }

    // MARK: Settings

    @Test func effectiveRatesWithAndWithoutScaling() {
        func close(_ a: (model: Double, embedding: Double), _ b: (Double, Double)) -> Bool {
            abs(a.model - b.0) <= 1e-12 * abs(b.0) && abs(a.embedding - b.1) <= 1e-12 * abs(b.1)
        }
        var s = TrainingSettings()
        #expect(close(s.effectiveRates, (1e-5, 1e-5)), "defaults: the embedding rate is the model rate")
        s.learningRate = 4e-5
        s.gradientAccumulation = 3
        s.batchSize = 30  // global: 2 per micro-batch × 3 micro-batches × 5 ranks
        #expect(close(s.effectiveRates, (4e-5, 4e-5)), "no scaling without scaleLearningRate")
        s.scaleLearningRate = true
        s.withPriorPreservation = true
        #expect(close(s.effectiveRates, (4e-5 * 60, 4e-5 * 60)), "\(s.effectiveRates)")
        s.withPriorPreservation = false
        #expect(close(s.effectiveRates, (4e-5 * 30, 4e-5 * 30)), "\(s.effectiveRates)")
        s.embeddingLearningRate = 1e-3
        #expect(close(s.effectiveRates, (4e-5 * 30, 1e-3 * 30)), "\(s.effectiveRates)")
        s.scaleLearningRate = false
        #expect(close(s.effectiveRates, (4e-5, 1e-3)))
        s.embeddingLearningRate = 0
        #expect(s.effectiveRates.embedding == 0)
    }

    @Test func validateNamesEachBadValue() throws {
        try TrainingSettings().validate()
        var ok = TrainingSettings()
        ok.embeddingLearningRate = 0  // frozen tokens are allowed
        ok.maxGradNorm = nil
        ok.priorLossWeight = 0
        ok.adam.weightDecay = 0
        ok.adam.beta1 = 0
        try ok.validate()

        let cases: [(String, (inout TrainingSettings) -> Void)] = [
            ("learning_rate", { $0.learningRate = 0 }), ("learning_rate", { $0.learningRate = -1e-5 }),
            ("learning_rate", { $0.learningRate = .nan }), ("learning_rate", { $0.learningRate = .infinity }),
            ("embedding_learning_rate", { $0.embeddingLearningRate = -1e-5 }), ("embedding_learning_rate", { $0.embeddingLearningRate = .nan }),
            ("embedding_learning_rate", { $0.embeddingLearningRate = .infinity }),
            ("batch_size", { $0.batchSize = 0 }), ("gradient_accumulation", { $0.gradientAccumulation = 0 }),
            ("epsilon", { $0.adam.epsilon = .infinity }), ("weight decay", { $0.adam.weightDecay = .infinity }),
            ("prior_loss_weight", { $0.priorLossWeight = -1 }), ("prior_loss_weight", { $0.priorLossWeight = .nan }),
            ("max_grad_norm", { $0.maxGradNorm = 0 }), ("max_grad_norm", { $0.maxGradNorm = -1 }),
            ("max_grad_norm", { $0.maxGradNorm = .infinity }),
            ("betas", { $0.adam.beta1 = 1 }), ("betas", { $0.adam.beta2 = -0.1 }), ("betas", { $0.adam.beta2 = .nan }),
            ("epsilon", { $0.adam.epsilon = 0 }), ("epsilon", { $0.adam.epsilon = .nan }),
            ("weight decay", { $0.adam.weightDecay = -0.01 }), ("weight decay", { $0.adam.weightDecay = .nan }),
        ]
        let fields = ["learning_rate", "embedding_learning_rate", "batch_size", "gradient_accumulation",
                      "prior_loss_weight", "max_grad_norm", "betas", "epsilon", "weight decay"]
        for (field, spoil) in cases {
            var s = TrainingSettings()
            spoil(&s)
            let error = UnitFixture.trainingError { try s.validate() }
            guard case let .invalidSetting(_, reason)? = error else { Issue.record("\(field): \(String(describing: error))"); continue }
            #expect(reason.contains(field), "\(field): \(reason)")
            // Only that problem is reported ("learning_rate" is part of "embedding_learning_rate").
            for other in fields where other != field && !field.contains(other) {
                #expect(!reason.contains(other), "\(field): the message also names \(other): \(reason)")
            }
        }
        // Several problems are all named at once.
        var bad = TrainingSettings()
        bad.batchSize = 0
        bad.gradientAccumulation = 0
        bad.adam.epsilon = -1
        let error = UnitFixture.trainingError { try bad.validate() }
        let text = error.map { "\($0)" } ?? ""
        #expect(text.contains("batch_size") && text.contains("gradient_accumulation") && text.contains("epsilon"), "\(text)")
    }
}
