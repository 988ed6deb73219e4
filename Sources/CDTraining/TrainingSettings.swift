/// The optimization settings of a Custom Diffusion job (defaults: diffusers' script, spec table 9).
public struct TrainingSettings: Sendable, Equatable {
    public var trainable: TrainableSet = .crossattnKV
    /// Base learning rate of the UNet tensors.
    public var learningRate: Double = 1e-5
    /// Learning rate of the modifier-token rows; nil: the same as `learningRate`.
    public var embeddingLearningRate: Double?
    /// diffusers' `--scale_lr`: rate × instance images per optimizer step (diffusers: accumulation ×
    /// per-device batch × processes, which is `batchSize` here), × 2 with prior preservation.
    public var scaleLearningRate = false
    /// Instance images per optimizer step, over all ranks and accumulated micro-batches.
    public var batchSize = 1
    /// Micro-batches of `batchSize / gradientAccumulation` samples per pass (their gradients are averaged).
    public var gradientAccumulation = 1
    public var withPriorPreservation = true
    public var priorLossWeight: Double = 1
    /// Global gradient-norm clip; nil disables clipping.
    public var maxGradNorm: Double? = 1
    public var adam = AdamW.Hyperparameters()
    public var schedule: LearningRateSchedule = .constant
    /// Cross-attention K/V at the start token (BOS, position 0) pass no gradient, as every
    /// reference implementation does (spec 2.6). false gives the plain gradient of the loss.
    public var detachStartToken = true

    public init() {}

    /// The learning rates actually used at step 0 for (model, embeddings), after `scaleLearningRate`.
    public var effectiveRates: (model: Double, embedding: Double) {
        var scale = 1.0
        if scaleLearningRate {
            scale = Double(batchSize) * (withPriorPreservation ? 2 : 1)
        }
        return (learningRate * scale, (embeddingLearningRate ?? learningRate) * scale)
    }

    /// Every impossible value, named.
    public func validate() throws {
        var problems: [String] = []
        if !(learningRate > 0 && learningRate.isFinite) { problems.append("learning_rate must be a positive number") }
        if let e = embeddingLearningRate, !(e >= 0 && e.isFinite) { problems.append("embedding_learning_rate must be ≥ 0") }
        if batchSize < 1 { problems.append("batch_size must be at least 1") }
        if gradientAccumulation < 1 { problems.append("gradient_accumulation must be at least 1") }
        if !(priorLossWeight >= 0 && priorLossWeight.isFinite) { problems.append("prior_loss_weight must be ≥ 0") }
        if let m = maxGradNorm, !(m > 0 && m.isFinite) { problems.append("max_grad_norm must be positive (or absent to disable clipping)") }
        let a = adam
        if !(a.beta1 >= 0 && a.beta1 < 1) || !(a.beta2 >= 0 && a.beta2 < 1) { problems.append("adam betas must be in [0, 1)") }
        if !(a.epsilon > 0 && a.epsilon.isFinite) { problems.append("adam epsilon must be a positive number") }
        if !(a.weightDecay >= 0 && a.weightDecay.isFinite) { problems.append("adam weight decay must be a number ≥ 0") }
        if !problems.isEmpty { throw TrainingError.invalidSetting(field: "settings", reason: problems.joined(separator: "; ")) }
    }
}
