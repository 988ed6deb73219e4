import CDTensor
import Foundation

/// The DDPM training schedule in fp32, computed as diffusers does: betas = linspace(√β0, √β1, T)²
/// ("scaled_linear") or linspace(β0, β1, T) ("linear"); ᾱ_t = Π_{i≤t} (1 − β_i), a running fp32
/// product like torch.cumprod.
public struct NoiseSchedule: Sendable {
    public let config: SchedulerConfig
    public let betas: [Float]
    public let alphasCumprod: [Float]

    public init(_ config: SchedulerConfig) {
        self.config = config
        let t = config.numTrainTimesteps
        func linspace(_ a: Float, _ b: Float) -> [Float] {
            // torch.linspace in fp32: a + i·step for the first half, b − (T−1−i)·step for the rest.
            let step = (b - a) / Float(t - 1)
            return (0..<t).map { i in i < t / 2 ? a + step * Float(i) : b - step * Float(t - 1 - i) }
        }
        // Python computes the end points in double; torch casts them to fp32.
        if config.betaSchedule == "scaled_linear" {
            betas = linspace(Float(config.betaStart.squareRoot()), Float(config.betaEnd.squareRoot())).map { $0 * $0 }
        } else {
            betas = linspace(Float(config.betaStart), Float(config.betaEnd))
        }
        var product: Float = 1
        alphasCumprod = betas.map { beta in product *= (1 - beta); return product }
    }

    public var trainTimesteps: Int { config.numTrainTimesteps }

    /// σ_t = √((1 − ᾱ_t)/ᾱ_t), the k-diffusion noise level of timestep t.
    public var sigmas: [Float] { alphasCumprod.map { ((1 - $0) / $0).squareRoot() } }

    /// x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε per sample, t one timestep per sample of x0 [B, …].
    public func addNoise(_ x0: Tensor, noise: Tensor, timesteps: [Int]) -> Tensor {
        precondition(noise.shape == x0.shape && timesteps.count == x0.shape[0], "add_noise shapes")
        let out = Tensor(zeros: x0.shape), per = x0.count / max(x0.shape[0], 1)
        for (b, t) in timesteps.enumerated() {
            let a = alphasCumprod[t].squareRoot(), s = (1 - alphasCumprod[t]).squareRoot()
            for i in (b * per)..<((b + 1) * per) { out.pointer[i] = a * x0.pointer[i] + s * noise.pointer[i] }
        }
        return out
    }

    /// v = √ᾱ_t·ε − √(1 − ᾱ_t)·x0, the v-prediction target.
    public func velocity(_ x0: Tensor, noise: Tensor, timesteps: [Int]) -> Tensor {
        precondition(noise.shape == x0.shape && timesteps.count == x0.shape[0], "velocity shapes")
        let out = Tensor(zeros: x0.shape), per = x0.count / max(x0.shape[0], 1)
        for (b, t) in timesteps.enumerated() {
            let a = alphasCumprod[t].squareRoot(), s = (1 - alphasCumprod[t]).squareRoot()
            for i in (b * per)..<((b + 1) * per) { out.pointer[i] = a * noise.pointer[i] - s * x0.pointer[i] }
        }
        return out
    }
}
