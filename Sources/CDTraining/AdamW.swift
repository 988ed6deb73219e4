import Foundation
import CDTensor

/// AdamW with PyTorch's semantics (`torch.optim.AdamW`, single-tensor path), per element in fp32
/// with the scalar factors computed in double as Python does:
///   p ← p·(1 − lr·wd);  m ← m + (1 − β1)(g − m);  v ← β2·v + (1 − β2)·g²
///   p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)
/// Parameters are in groups with their own learning rate and weight decay (model weights and token
/// embeddings). Moments start at zero; `step` counts updates taken.
public final class AdamW: @unchecked Sendable {
    public struct Hyperparameters: Sendable, Equatable, Codable {
        public var beta1: Double = 0.9, beta2: Double = 0.999, epsilon: Double = 1e-8, weightDecay: Double = 1e-2
        public init(beta1: Double = 0.9, beta2: Double = 0.999, epsilon: Double = 1e-8, weightDecay: Double = 1e-2) {
            self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon; self.weightDecay = weightDecay
        }
    }

    /// One trainable tensor with its gradient and moments.
    public struct Slot {
        public let name: String
        public let parameter: Tensor, gradient: Tensor
        public let m: Tensor, v: Tensor
        public let group: Int
    }

    public let hyper: Hyperparameters
    public private(set) var slots: [Slot] = []
    public var step = 0

    public init(_ hyper: Hyperparameters) { self.hyper = hyper }

    /// Adds a parameter (updated in place) and its gradient buffer to group `group`.
    public func add(_ name: String, parameter: Tensor, gradient: Tensor, group: Int) {
        precondition(parameter.shape == gradient.shape, "\(name): gradient \(gradient.shape) for parameter \(parameter.shape)")
        slots.append(Slot(name: name, parameter: parameter, gradient: gradient,
                          m: Tensor(zeros: parameter.shape), v: Tensor(zeros: parameter.shape), group: group))
    }

    /// One update with learning rate `rates[group]` for each slot.
    public func update(rates: [Double]) {
        step += 1
        let t = Double(step)
        let bc1 = 1 - pow(hyper.beta1, t), bc2Sqrt = (1 - pow(hyper.beta2, t)).squareRoot()
        let oneMinusB1 = Float(1 - hyper.beta1), b2 = Float(hyper.beta2), oneMinusB2 = Float(1 - hyper.beta2)
        let eps = Float(hyper.epsilon), bc2 = Float(bc2Sqrt)
        for slot in slots {
            let lr = rates[slot.group]
            let decay = Float(1 - lr * hyper.weightDecay), stepSize = Float(-(lr / bc1))
            let (p, g, m, v) = (slot.parameter.pointer, slot.gradient.pointer, slot.m.pointer, slot.v.pointer)
            ThreadPool.shared.parallelRanges(slot.parameter.count, grain: 16384) { r in
                for i in r {
                    p[i] *= decay
                    m[i] += oneMinusB1 * (g[i] - m[i])
                    v[i] = v[i] * b2 + oneMinusB2 * g[i] * g[i]
                    let denom = v[i].squareRoot() / bc2 + eps
                    p[i] += stepSize * (m[i] / denom)
                }
            }
        }
    }
}

/// Global L2 norm of the gradients (accumulated in double), and `torch.nn.utils.clip_grad_norm_`:
/// every gradient × min(1, maxNorm / (norm + 1e-6)). Returns (norm before clipping, coefficient).
public func clipGradientNorm(_ gradients: [Tensor], maxNorm: Double?) -> (norm: Double, coefficient: Double) {
    var sum = 0.0
    for g in gradients {
        let p = g.pointer
        for i in 0..<g.count { sum += Double(p[i]) * Double(p[i]) }
    }
    let norm = sum.squareRoot()
    guard let maxNorm else { return (norm, 1) }
    let coefficient = min(1, maxNorm / (norm + 1e-6))
    if coefficient < 1 {
        let c = Float(coefficient)
        for g in gradients { scaleForward(g, by: c, out: g) }
    }
    return (norm, coefficient)
}

/// Learning rate by optimizer step (0-based), diffusers' `get_scheduler` names.
public enum LearningRateSchedule: Sendable, Equatable {
    case constant
    /// Linear ramp from 0 over `warmup` steps, then constant.
    case constantWithWarmup(warmup: Int)
    /// Linear ramp over `warmup` steps, then linear decay to 0 at `total` steps.
    case linear(warmup: Int, total: Int)

    /// The multiplier of the base rate at step `step` (the update that makes global step step+1).
    public func factor(at step: Int) -> Double {
        switch self {
        case .constant:
            return 1
        case let .constantWithWarmup(warmup):
            return step < warmup ? Double(step) / Double(max(1, warmup)) : 1
        case let .linear(warmup, total):
            if step < warmup { return Double(step) / Double(max(1, warmup)) }
            return max(0, Double(total - step) / Double(max(1, total - warmup)))
        }
    }
}
