/// The Custom Diffusion losses (spec 2.7) over pred/target [B, C, H, W] and mask [B, 1, H, W].
public enum MSENormalization: Sendable {
    /// ℓ_b = Σ_{c,h,w} (p − t)²·m / Σ_{h,w} m — diffusers' masked instance loss. The numerator sums
    /// over C channels but the denominator counts one, so ℓ_b is C × the masked mean (kept on
    /// purpose: it is what diffusers trains with). A sample whose mask is all zero contributes 0.
    case maskSum
    /// ℓ_b = Σ (p − t)² / (C·H·W) — `F.mse_loss(reduction="mean")` per sample (class images).
    case mean
}

/// Per-sample losses ℓ_b, written into `losses` [B]. `mask` nil means all ones.
public func maskedMSEForward(pred: Tensor, target: Tensor, mask: Tensor?, normalization: MSENormalization,
                             losses: Tensor) {
    let (b, per, plane) = mseDims(pred, mask)
    precondition(target.count == pred.count && losses.count == b, "masked MSE shapes")
    for s in 0..<b {
        var sum = 0.0
        for i in 0..<per {
            let e = Double(pred.pointer[s * per + i] - target.pointer[s * per + i])
            sum += e * e * Double(mask?.pointer[s * plane + i % plane] ?? 1)
        }
        let denom = mseDenominator(mask, sample: s, plane: plane, per: per, normalization)
        losses.pointer[s] = denom > 0 ? Float(sum / denom) : 0
    }
}

/// forward: ℓ_b = Σ m·(p − t)² / denom_b;  dPred += weights[b] · 2·m·(p − t) / denom_b, where
/// `weights[b]` = ∂L/∂ℓ_b (e.g. 1/B_instance for a mean over the instance half).
public func maskedMSEBackward(pred: Tensor, target: Tensor, mask: Tensor?, normalization: MSENormalization,
                              weights: [Float], dPred: Tensor) {
    let (b, per, plane) = mseDims(pred, mask)
    precondition(weights.count == b && dPred.count == pred.count, "masked MSE gradient shapes")
    for s in 0..<b where weights[s] != 0 {
        let denom = mseDenominator(mask, sample: s, plane: plane, per: per, normalization)
        guard denom > 0 else { continue }
        let k = Float(2 * Double(weights[s]) / denom)
        for i in 0..<per {
            let m = mask?.pointer[s * plane + i % plane] ?? 1
            dPred.pointer[s * per + i] += k * m * (pred.pointer[s * per + i] - target.pointer[s * per + i])
        }
    }
}

/// (batch, elements per sample, spatial elements per channel); the mask must be [B, 1, H, W].
private func mseDims(_ pred: Tensor, _ mask: Tensor?) -> (Int, Int, Int) {
    precondition(pred.rank >= 2, "loss input \(pred.shape) must be [B, C, …]")
    let b = pred.shape[0], per = pred.count / max(b, 1), plane = per / max(pred.shape[1], 1)
    if let mask { precondition(mask.count == b * plane, "mask \(mask.shape) must be [\(b), 1, …] for \(pred.shape)") }
    return (b, per, plane)
}

private func mseDenominator(_ mask: Tensor?, sample s: Int, plane: Int, per: Int, _ n: MSENormalization) -> Double {
    switch n {
    case .mean: return Double(per)
    case .maskSum:
        guard let mask else { return Double(plane) }
        return sumOf(mask.pointer + s * plane, plane)
    }
}
