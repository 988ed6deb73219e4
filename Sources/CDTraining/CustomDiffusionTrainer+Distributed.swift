import CDDistributed
import CDTensor
import Foundation

/// Data parallelism for `CustomDiffusionTrainer`: the trainable state in a fixed order, its
/// broadcast, and the gradient exchange of one optimizer step.
extension CustomDiffusionTrainer {
    /// Every trained tensor's gradient in the optimizer's order: the modifier-token rows first
    /// (when the job has tokens), then the UNet tensors in `trainableKeys` order. The same order on
    /// every rank, so a flat buffer of them lines up element by element.
    public var gradientTensors: [Tensor] { optimizer.slots.map(\.gradient) }

    /// Every trained tensor with its AdamW moments, in the same order: (parameter, m, v).
    var stateTensors: [Tensor] { optimizer.slots.flatMap { [$0.parameter, $0.m, $0.v] } }

    /// Replaces this rank's trained parameters, AdamW moments, step and sample position by
    /// `root`'s (at start, and after `root` restored a checkpoint).
    public func broadcastState(root: Int, over world: Communicator) throws {
        guard world.size > 1 else { return }
        for t in stateTensors { try world.broadcast(t.pointer, count: t.count, root: root) }
        var counters = [UInt8]()
        if world.rank == root {
            for v in [Int64(step), Int64(samplesSeen)] { withUnsafeBytes(of: v.littleEndian) { counters += $0 } }
        }
        try world.broadcast(bytes: &counters, root: root)
        guard counters.count == 16 else {
            throw CommunicatorError(call: "broadcastState", code: -1, message: "expected 16 bytes of counters, got \(counters.count)")
        }
        let values = counters.withUnsafeBytes { raw in (0..<2).map { Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self))) } }
        optimizer.step = values[0]
        samplesSeen = values[1]
    }

    /// A 64-bit hash of the trained parameters, moments and counters (their bit patterns, two
    /// floats per word), to check that ranks agree without moving the tensors.
    public var stateHash: UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        h = (h ^ UInt64(step)) &* 0x0000_0100_0000_01B3
        h = (h ^ UInt64(samplesSeen)) &* 0x0000_0100_0000_01B3
        for t in stateTensors {
            let raw = UnsafeRawPointer(t.pointer), words = t.count / 2
            for i in 0..<words { h = (h ^ raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)) &* 0x0000_0100_0000_01B3 }
            if t.count % 2 == 1 { h = (h ^ UInt64(t.pointer[t.count - 1].bitPattern)) &* 0x0000_0100_0000_01B3 }
            h ^= h >> 29
        }
        return h
    }
}

/// One optimizer step of data-parallel training: this rank's micro-batches forward and backward,
/// ONE in-place allreduce (sum) of a flat buffer holding every trained gradient plus the loss
/// terms, then the same clip + AdamW update on every rank.
///
/// Each micro-batch is weighted by (its instance samples) / (global batch), so the sum over all
/// micro-batches of all ranks is exactly the single-process mean over the global batch whatever
/// the split (a rank with more samples weighs more; a rank with none adds zeros). With one rank the
/// weights are 1/accumulation and no collective is made: the step is the engine's `step`.
public final class DataParallelStep {
    public let trainer: CustomDiffusionTrainer
    public let world: Communicator
    /// Gradient elements, then loss, instance loss, prior loss, prior weight.
    private var buffer: [Float]
    private let gradients: [Tensor]
    private let gradientCount: Int

    public init(trainer: CustomDiffusionTrainer, communicator: Communicator) {
        self.trainer = trainer
        self.world = communicator
        gradients = trainer.gradientTensors
        gradientCount = gradients.reduce(0) { $0 + $1.count }
        buffer = communicator.size > 1 ? [Float](repeating: 0, count: gradientCount + 4) : []
    }

    /// Floats in the allreduce of one step.
    public var elementCount: Int { gradientCount + 4 }

    public struct Report: Sendable {
        public var step: CustomDiffusionTrainer.StepReport
        /// Wall time of the allreduce on this rank (includes waiting for the slowest rank); 0 with one rank.
        public var allreduceSeconds: Double
        /// Instance samples this rank processed.
        public var localSamples: Int
    }

    /// One step over this rank's `microBatches` (possibly none) of a global batch of `globalBatch`
    /// instance samples. A non-finite global loss throws before the update on every rank alike.
    public func step(_ microBatches: [TrainingBatch], globalBatch: Int) throws -> Report {
        precondition(globalBatch >= 1, "a global batch needs samples")
        precondition(world.size > 1 || !microBatches.isEmpty, "a step needs at least one micro-batch")
        let start = DispatchTime.now().uptimeNanoseconds
        trainer.zeroGradients()
        var total = CustomDiffusionTrainer.Losses(loss: 0, instance: 0, prior: nil)
        var priorWeight = 0.0, local = 0
        for batch in microBatches {
            let w = Double(batch.instanceCount) / Double(globalBatch)
            let l = trainer.accumulateGradients(batch, weight: w)
            total.loss += l.loss * w
            total.instance += l.instance * w
            if let p = l.prior {
                total.prior = (total.prior ?? 0) + p * w
                priorWeight += w
            }
            local += batch.instanceCount
        }
        var allreduceSeconds = 0.0
        if world.size > 1 {
            try buffer.withUnsafeMutableBufferPointer { flat in
                let base = flat.baseAddress!
                var at = 0
                for g in gradients {
                    (base + at).update(from: g.pointer, count: g.count)
                    at += g.count
                }
                base[at] = Float(total.loss)
                base[at + 1] = Float(total.instance)
                base[at + 2] = Float(total.prior ?? 0)
                base[at + 3] = Float(priorWeight)
                let t0 = DispatchTime.now().uptimeNanoseconds
                try world.allreduceSum(base, count: flat.count)
                allreduceSeconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                at = 0
                for g in gradients {
                    g.pointer.update(from: base + at, count: g.count)
                    at += g.count
                }
                total = .init(loss: Double(base[at]), instance: Double(base[at + 1]), prior: base[at + 3] > 0 ? Double(base[at + 2]) : nil)
            }
        }
        guard total.loss.isFinite else {
            throw TrainingError.nonFiniteLoss(step: trainer.step + 1, loss: Float(total.loss))
        }
        let update = trainer.applyUpdate()
        trainer.samplesSeen += globalBatch
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return Report(step: .init(step: trainer.step, losses: total, update: update, seconds: seconds),
                      allreduceSeconds: allreduceSeconds, localSamples: local)
    }

    /// Checks that every rank holds rank 0's state (parameters, moments, counters); if any does
    /// not (an allreduce that is not bitwise identical on all ranks would do that), copies rank
    /// 0's state to all and returns the number of ranks that differed (0 when all agreed).
    @discardableResult
    public func verifyIdentical() throws -> Int {
        guard world.size > 1 else { return 0 }
        let mine = withUnsafeBytes(of: trainer.stateHash.littleEndian) { Array($0) }
        var hash = world.isLead ? mine : []
        try world.broadcast(bytes: &hash, root: 0)
        var differs: Float = mine == hash ? 0 : 1
        try world.allreduceSum(&differs, count: 1)
        if differs > 0 { try trainer.broadcastState(root: 0, over: world) }
        return Int(differs)
    }
}
