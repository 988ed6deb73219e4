import CDModels
import CDTensor
import Foundation

/// Custom Diffusion training (spec 2.0–2.9, diffusers' `train_custom_diffusion.py` numerics):
/// text encoder with trainable modifier-token rows → UNet with trainable tensors (K/V of every
/// cross-attention by default, BOS position detached) → masked instance loss + prior loss →
/// backward → global-norm clipping → AdamW. Everything else stays frozen and shared with the
/// loaded model; the trainable UNet tensors are owned copies updated in place.
///
/// One difference from diffusers, on purpose (spec 2.8): only the modifier rows are in the
/// optimizer, so AdamW's decoupled weight decay does not shrink the ~49k frozen embedding rows
/// (diffusers decays them by (1 − lr·wd) per step while training; they are never saved).
public final class CustomDiffusionTrainer: @unchecked Sendable {
    public let settings: TrainingSettings
    public let textEncoder: CLIPTextModel
    public private(set) var unet: UNet2DConditionModel
    public private(set) var tokenizer: CLIPTokenizer
    public let tokens: ModifierTokens
    public let noiseSchedule: NoiseSchedule
    public let scalingFactor: Float
    /// Trained UNet keys, in parameter-table order.
    public let trainableKeys: [String]
    /// The base model's values of `trainableKeys` (for deltas and the fingerprint).
    public let base: [String: Tensor]
    public let baseFingerprint: String
    let unetGrads: ParameterGradients
    /// Gradient of the modifier rows [n, dim].
    public let tokenGradient: Tensor
    let optimizer: AdamW
    /// Instance samples of completed steps (the position in the sample stream).
    public internal(set) var samplesSeen = 0
    private let arena = Arena()

    public var step: Int { optimizer.step }

    public init(models: StableDiffusionModels, tokenizer: CLIPTokenizer, tokens: [(name: String, initializer: String)],
                settings: TrainingSettings) throws {
        try settings.validate()
        self.settings = settings
        var tokenizer = tokenizer
        self.tokens = try ModifierTokens(tokens, tokenizer: &tokenizer,
                                         table: models.textEncoder.weights["text_model.embeddings.token_embedding.weight"])
        self.tokenizer = tokenizer
        textEncoder = models.textEncoder
        noiseSchedule = NoiseSchedule(models.scheduler)
        scalingFactor = models.vae.config.scalingFactor
        let specs = UNet2DConditionModel.parameterSpecs(models.unet.config)
        trainableKeys = try settings.trainable.keys(in: specs)
        let w = models.unet.weights
        base = Dictionary(uniqueKeysWithValues: trainableKeys.map { ($0, w[$0]) })
        baseFingerprint = TrainedConcept.fingerprint(of: base)
        unet = try models.unet.replacingWeights(Dictionary(uniqueKeysWithValues: trainableKeys.map { ($0, w[$0].copy()) }))
        unetGrads = ParameterGradients(keys: trainableKeys, specs: specs)
        tokenGradient = Tensor(zeros: self.tokens.rows.shape)
        optimizer = AdamW(settings.adam)
        // diffusers' optimizer order: the embedding first, then the UNet tensors.
        if !self.tokens.names.isEmpty { optimizer.add("token_embedding", parameter: self.tokens.rows, gradient: tokenGradient, group: 1) }
        for key in trainableKeys { optimizer.add(key, parameter: unet.weights[key], gradient: unetGrads[key]!, group: 0) }
    }

    /// The current gradient of a trained UNet key (after `accumulateGradients`).
    public func gradient(of key: String) -> Tensor? { unetGrads[key] }

    /// The current value of a trained UNet key.
    public func parameter(_ key: String) -> Tensor? { trainableKeys.contains(key) ? unet.weights[key] : nil }

    public struct Losses: Sendable {
        public var loss: Double, instance: Double, prior: Double?
    }

    public func zeroGradients() {
        unetGrads.zero()
        tokenGradient.zero()
    }

    /// Forward and backward of one micro-batch, adding `weight` × its loss gradient into the
    /// gradients (weight 1/accumulation for gradient accumulation). `observe` receives
    /// "encoder_hidden_states" and "model_pred" (valid during the call).
    @discardableResult
    public func accumulateGradients(_ batch: TrainingBatch, weight: Double = 1,
                                    observe: ((String, Tensor) -> Void)? = nil) -> Losses {
        let b = batch.count, n = batch.instanceCount
        precondition(n >= 1 && n <= b && batch.ids.count == b && batch.timesteps.count == b, "batch of \(b) with \(n) instance samples")
        precondition(batch.timesteps.allSatisfy { $0 >= 0 && $0 < noiseSchedule.trainTimesteps }, "timesteps must be in 0..<\(noiseSchedule.trainTimesteps)")
        arena.reset()
        let learnsTokens = !tokens.names.isEmpty
        let (context, textTape): (Tensor, CLIPTape?)
        if learnsTokens {
            let (c, t) = textEncoder.trainingForward(ids: batch.ids, embeddingOverride: tokens.override, arena: arena)
            (context, textTape) = (c, t)
        } else {
            (context, textTape) = (textEncoder.forward(ids: batch.ids), nil)
        }
        observe?("encoder_hidden_states", context)
        let noisy = noiseSchedule.addNoise(batch.latents, noise: batch.noise, timesteps: batch.timesteps)
        let (pred, tape) = unet.trainingForward(sample: noisy, timesteps: batch.timesteps.map(Float.init), context: context,
                                                grads: unetGrads, arena: arena)
        observe?("model_pred", pred)

        let dPred = arena.tensor(pred.shape)
        let losses = lossTerms(pred: pred, target: target(batch), batch: batch, weight: weight, dPred: dPred)
        let dContext = learnsTokens ? arena.tensor(context.shape) : nil
        unet.backward(tape, dOut: dPred, grads: unetGrads, dContext: dContext, detachFirstContextToken: settings.detachStartToken)
        if let textTape, let dContext { textEncoder.backward(textTape, dOut: dContext, dRows: tokenGradient) }
        return losses
    }

    /// The loss of a batch with the current weights, without gradients (validation).
    public func evaluate(_ batch: TrainingBatch) -> Losses {
        let override = tokens.names.isEmpty ? nil : tokens.override
        let context = textEncoder.forward(ids: batch.ids, embeddingOverride: override)
        let noisy = noiseSchedule.addNoise(batch.latents, noise: batch.noise, timesteps: batch.timesteps)
        let pred = unet.forward(sample: noisy, timesteps: batch.timesteps.map(Float.init), context: context)
        return lossTerms(pred: pred, target: target(batch), batch: batch, weight: 1, dPred: nil)
    }

    private func target(_ batch: TrainingBatch) -> Tensor {
        noiseSchedule.config.prediction == .vPrediction
            ? noiseSchedule.velocity(batch.latents, noise: batch.noise, timesteps: batch.timesteps) : batch.noise
    }

    /// Loss (spec 2.7): mean over instance samples of the masked loss (C × masked MSE), plus
    /// prior_loss_weight × the plain MSE over the class half when there is one. With `dPred`,
    /// adds weight × ∂loss/∂pred into it.
    private func lossTerms(pred: Tensor, target: Tensor, batch: TrainingBatch, weight: Double, dPred: Tensor?) -> Losses {
        let b = batch.count, n = batch.instanceCount
        let inst = (pred.slice(0..<n), target.slice(0..<n), batch.mask.slice(0..<n))
        let perSample = Tensor(zeros: [n])
        maskedMSEForward(pred: inst.0, target: inst.1, mask: inst.2, normalization: .maskSum, losses: perSample)
        let instance = perSample.array.reduce(0.0) { $0 + Double($1) } / Double(n)
        if let dPred {
            maskedMSEBackward(pred: inst.0, target: inst.1, mask: inst.2, normalization: .maskSum,
                              weights: Array(repeating: Float(weight / Double(n)), count: n), dPred: dPred.slice(0..<n))
        }
        var prior: Double?
        if b > n {
            let cls = (pred.slice(n..<b), target.slice(n..<b))
            let classLosses = Tensor(zeros: [b - n])
            maskedMSEForward(pred: cls.0, target: cls.1, mask: nil, normalization: .mean, losses: classLosses)
            prior = classLosses.array.reduce(0.0) { $0 + Double($1) } / Double(b - n)
            if let dPred {
                maskedMSEBackward(pred: cls.0, target: cls.1, mask: nil, normalization: .mean,
                                  weights: Array(repeating: Float(weight * settings.priorLossWeight / Double(b - n)), count: b - n),
                                  dPred: dPred.slice(n..<b))
            }
        }
        return Losses(loss: instance + settings.priorLossWeight * (prior ?? 0), instance: instance, prior: prior)
    }

    public struct Update: Sendable {
        public var gradientNorm: Double, clipCoefficient: Double
        public var learningRate: Double, embeddingLearningRate: Double
    }

    /// Clips the accumulated gradients and takes one AdamW step.
    @discardableResult
    public func applyUpdate() -> Update {
        let (norm, coefficient) = clipGradientNorm([tokenGradient] + trainableKeys.map { unetGrads[$0]! }, maxNorm: settings.maxGradNorm)
        let rates = settings.effectiveRates, f = settings.schedule.factor(at: optimizer.step)
        optimizer.update(rates: [rates.model * f, rates.embedding * f])
        return Update(gradientNorm: norm, clipCoefficient: coefficient, learningRate: rates.model * f,
                      embeddingLearningRate: rates.embedding * f)
    }

    /// What one optimizer step reports.
    public struct StepReport: Sendable {
        public var step: Int
        public var losses: Losses
        public var update: Update
        public var seconds: Double
    }

    /// One optimizer step over `microBatches` (gradient accumulation: each weighted 1/count).
    /// A non-finite loss stops before the update, leaving the weights as they were.
    public func step(_ microBatches: [TrainingBatch]) throws -> StepReport {
        precondition(!microBatches.isEmpty, "a step needs at least one micro-batch")
        let start = DispatchTime.now().uptimeNanoseconds
        zeroGradients()
        var total = Losses(loss: 0, instance: 0, prior: nil)
        let w = 1 / Double(microBatches.count)
        for batch in microBatches {
            let l = accumulateGradients(batch, weight: w)
            total.loss += l.loss * w
            total.instance += l.instance * w
            if let p = l.prior { total.prior = (total.prior ?? 0) + p * w }
        }
        guard total.loss.isFinite else { throw TrainingError.nonFiniteLoss(step: step + 1, loss: Float(total.loss)) }
        let update = applyUpdate()
        samplesSeen += microBatches.reduce(0) { $0 + $1.instanceCount }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return StepReport(step: step, losses: total, update: update, seconds: seconds)
    }

    /// Runs steps until `steps` optimizer steps are done; `batches(k)` gives the micro-batches of
    /// step k (0-based), `event` is called after each step.
    public func train(until steps: Int, batches: (Int) throws -> [TrainingBatch], event: (StepReport) throws -> Void) throws {
        while step < steps { try event(try self.step(try batches(step))) }
    }

    /// The run's result so far, for the output writers.
    public func concept(settingsJSON: String = "{}") -> TrainedConcept {
        TrainedConcept(unet: Dictionary(uniqueKeysWithValues: trainableKeys.map { ($0, unet.weights[$0].copy()) }),
                       base: base,
                       tokens: tokens.names.enumerated().map { ($1, tokens.rows[$0].copy()) },
                       trainable: settings.trainable.name, baseFingerprint: baseFingerprint, step: step,
                       settings: settingsJSON, unetConfig: unet.config)
    }
}
