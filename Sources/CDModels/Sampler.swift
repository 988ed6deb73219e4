import CDTensor
import Foundation

/// The samplers of `cdtrainerd sample`, named as on the command line.
public enum SamplerKind: String, CaseIterable, Sendable {
    case ddim, euler, eulerAncestral = "euler-a", dpmSolverPP2M = "dpmpp-2m"

    /// diffusers' class default for `timestep_spacing` when the config has none.
    var defaultSpacing: String { self == .ddim ? "leading" : "linspace" }
}

/// One denoising schedule over `timesteps` (what the UNet is given, in order). A pipeline calls
/// `scaleModelInput` before each UNet call and `step` after it.
public protocol Sampler {
    var timesteps: [Float] { get }
    /// Multiplier of the initial N(0, I) latents.
    var initNoiseSigma: Float { get }
    func scaleModelInput(_ sample: Tensor, step: Int) -> Tensor
    /// The sample for the next step. `noise` supplies N(0, I) tensors for stochastic samplers.
    mutating func step(modelOutput: Tensor, step: Int, sample: Tensor, noise: () -> Tensor) -> Tensor
}

/// Why `steps` cannot run with this sampler and schedule (a timestep outside the trained range, or
/// two equal timesteps, as too many steps with `leading` spacing and steps_offset give), or nil.
public func samplerProblem(_ kind: SamplerKind, config: SchedulerConfig, steps: Int) -> String? {
    guard steps >= 1 && steps <= config.numTrainTimesteps else { return "steps must be 1…\(config.numTrainTimesteps) (got \(steps))" }
    let t = makeSampler(kind, config: config, steps: steps).timesteps
    let spacing = config.timestepSpacing ?? kind.defaultSpacing
    if t.contains(where: { $0 < 0 || $0 > Float(config.numTrainTimesteps - 1) }) || zip(t, t.dropFirst()).contains(where: { $0 <= $1 }) {
        return "\(steps) steps do not fit the \(config.numTrainTimesteps) trained timesteps with \(spacing) spacing and this scheduler; use fewer steps"
    }
    return nil
}

/// Builds the sampler `kind` for `steps` steps from a scheduler config (its `timestep_spacing`,
/// or the class default diffusers would use with `from_config`).
public func makeSampler(_ kind: SamplerKind, config: SchedulerConfig, steps: Int, eta: Float = 0) -> Sampler {
    precondition(steps >= 1 && steps <= config.numTrainTimesteps, "steps must be in 1…\(config.numTrainTimesteps)")
    let schedule = NoiseSchedule(config)
    let spacing = config.timestepSpacing ?? kind.defaultSpacing
    switch kind {
    case .ddim: return DDIMSampler(schedule: schedule, steps: steps, spacing: spacing, eta: eta)
    case .euler: return EulerSampler(schedule: schedule, steps: steps, spacing: spacing, ancestral: false)
    case .eulerAncestral: return EulerSampler(schedule: schedule, steps: steps, spacing: spacing, ancestral: true)
    case .dpmSolverPP2M: return DPMSolverPP2MSampler(schedule: schedule, steps: steps, spacing: spacing)
    }
}

/// Timesteps as diffusers' `set_timesteps` (sd-architecture-spec §9.3), in sampling order.
/// `points` is N, or N + 1 for DPM-Solver (which then drops the last).
func spacedTimesteps(_ spacing: String, steps n: Int, points: Int, train t: Int, offset: Int, round: Bool) -> [Double] {
    switch spacing {
    case "trailing":
        // np.arange(T, 0, −T/N) fills start + i·((start + step) − start); then round, − 1. For a
        // few N numpy yields N + 1 values (the last −1), which diffusers would use; we keep N.
        let ratio = Double(t) / Double(n)
        let delta = (Double(t) - ratio) - Double(t)
        return (0..<n).map { (Double(t) + Double($0) * delta).rounded(.toNearestOrEven) - 1 }
    case "linspace":
        // np.linspace(0, T − 1, points): i · ((T − 1)/(points − 1)), the last exactly T − 1.
        let step = points > 1 ? Double(t - 1) / Double(points - 1) : 0
        let values = (0..<points).map { i -> Double in
            let v = i == points - 1 ? Double(t - 1) : Double(i) * step
            return round ? v.rounded(.toNearestOrEven) : v
        }
        return Array(values.reversed().prefix(n))
    default:  // leading
        let ratio = t / points
        return Array((0..<points).map { Double($0 * ratio + offset) }.reversed().prefix(n))
    }
}

/// np.interp(x, 0..<count, values): σ at fractional timesteps, clamped to the ends like numpy.
func interpolate(_ values: [Float], at x: Double) -> Double {
    if x <= 0 { return Double(values[0]) }
    if x >= Double(values.count - 1) { return Double(values[values.count - 1]) }
    let i = Int(x.rounded(.down))
    let f = x - Double(i)
    return Double(values[i]) * (1 - f) + Double(values[i + 1]) * f
}

/// out = a·x + b·y elementwise (fp32, the order diffusers evaluates).
func combine(_ a: Float, _ x: Tensor, _ b: Float, _ y: Tensor) -> Tensor {
    let out = Tensor(zeros: x.shape)
    for i in 0..<x.count { out.pointer[i] = a * x.pointer[i] + b * y.pointer[i] }
    return out
}

/// DDIM (diffusers DDIMScheduler.step, §9.4): x̂0 and ε̂ from the model output, then
/// x' = √ᾱ'·x̂0 + √(1 − ᾱ' − σ²)·ε̂ + σ·z with σ = η·√((1 − ᾱ')/(1 − ᾱ))·√(1 − ᾱ/ᾱ').
public struct DDIMSampler: Sampler {
    let schedule: NoiseSchedule
    let stepTimesteps: [Int]
    let ratio: Int
    let eta: Float
    let finalAlphaCumprod: Float

    init(schedule: NoiseSchedule, steps: Int, spacing: String, eta: Float) {
        self.schedule = schedule
        let t = schedule.trainTimesteps
        stepTimesteps = spacedTimesteps(spacing, steps: steps, points: steps, train: t, offset: schedule.config.stepsOffset ?? 0, round: true).map { Int($0) }
        ratio = t / steps
        self.eta = eta
        finalAlphaCumprod = (schedule.config.setAlphaToOne ?? true) ? 1 : schedule.alphasCumprod[0]
    }

    public var timesteps: [Float] { stepTimesteps.map(Float.init) }
    public var initNoiseSigma: Float { 1 }
    public func scaleModelInput(_ sample: Tensor, step: Int) -> Tensor { sample }

    public mutating func step(modelOutput: Tensor, step: Int, sample: Tensor, noise: () -> Tensor) -> Tensor {
        let t = stepTimesteps[step], prev = t - ratio
        let acp = schedule.alphasCumprod
        let alpha = acp[t], alphaPrev = prev >= 0 ? acp[prev] : finalAlphaCumprod
        let beta = 1 - alpha
        let (x0, eps): (Tensor, Tensor)
        switch schedule.config.prediction {
        case .epsilon:
            x0 = combine(1 / alpha.squareRoot(), sample, -beta.squareRoot() / alpha.squareRoot(), modelOutput)
            eps = modelOutput
        case .vPrediction:
            x0 = combine(alpha.squareRoot(), sample, -beta.squareRoot(), modelOutput)
            eps = combine(alpha.squareRoot(), modelOutput, beta.squareRoot(), sample)
        }
        let variance = (1 - alphaPrev) / beta * (1 - alpha / alphaPrev)
        let std = eta * variance.squareRoot()
        var out = combine(alphaPrev.squareRoot(), x0, (1 - alphaPrev - std * std).squareRoot(), eps)
        if eta > 0 { out = combine(1, out, std, noise()) }
        return out
    }
}

/// Euler and Euler-ancestral (k-diffusion style, diffusers EulerDiscreteScheduler /
/// EulerAncestralDiscreteScheduler, §9.5) on σ-scaled latents.
public struct EulerSampler: Sampler {
    public let timesteps: [Float]
    let sigmas: [Float]  // one per step, then 0
    let ancestral: Bool
    let prediction: SchedulerConfig.Prediction
    public let initNoiseSigma: Float

    init(schedule: NoiseSchedule, steps: Int, spacing: String, ancestral: Bool) {
        let t = schedule.trainTimesteps
        let steps = spacedTimesteps(spacing, steps: steps, points: steps, train: t, offset: schedule.config.stepsOffset ?? 0, round: false)
        let full = schedule.sigmas
        timesteps = steps.map { Float($0) }
        sigmas = steps.map { Float(interpolate(full, at: Double(Float($0)))) } + [0]
        self.ancestral = ancestral
        prediction = schedule.config.prediction
        let maxSigma = sigmas.max() ?? 0
        initNoiseSigma = spacing == "leading" ? (maxSigma * maxSigma + 1).squareRoot() : maxSigma
    }

    public func scaleModelInput(_ sample: Tensor, step: Int) -> Tensor {
        let s = sigmas[step]
        return combine(1 / (s * s + 1).squareRoot(), sample, 0, sample)
    }

    public mutating func step(modelOutput: Tensor, step: Int, sample: Tensor, noise: () -> Tensor) -> Tensor {
        let sigma = sigmas[step], next = sigmas[step + 1]
        let x0: Tensor
        switch prediction {
        case .epsilon: x0 = combine(1, sample, -sigma, modelOutput)
        case .vPrediction: x0 = combine(-sigma / (sigma * sigma + 1).squareRoot(), modelOutput, 1 / (sigma * sigma + 1), sample)
        }
        // d = (x − x̂0)/σ;  x ← x + d·(σ_target − σ)
        let derivative = combine(1 / sigma, sample, -1 / sigma, x0)
        guard ancestral else { return combine(1, sample, next - sigma, derivative) }
        let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma)).squareRoot()
        let down = (next * next - up * up).squareRoot()
        let moved = combine(1, sample, down - sigma, derivative)
        return up > 0 ? combine(1, moved, up, noise()) : moved
    }
}

/// DPM-Solver++(2M), diffusers DPMSolverMultistepScheduler defaults (midpoint, lower-order final
/// step, final σ 0; §9.6), on unscaled latents (initNoiseSigma 1, no input scaling).
public struct DPMSolverPP2MSampler: Sampler {
    public let timesteps: [Float]
    let sigmas: [Float]
    let prediction: SchedulerConfig.Prediction
    var previousDataPrediction: Tensor?

    init(schedule: NoiseSchedule, steps: Int, spacing: String) {
        let t = schedule.trainTimesteps
        let stepTimesteps: [Double]
        if spacing == "trailing" {
            stepTimesteps = spacedTimesteps(spacing, steps: steps, points: steps, train: t, offset: 0, round: true)
        } else {
            stepTimesteps = spacedTimesteps(spacing, steps: steps, points: steps + 1, train: t,
                                            offset: schedule.config.stepsOffset ?? 0, round: true)
        }
        timesteps = stepTimesteps.map { Float($0) }
        let full = schedule.sigmas
        sigmas = stepTimesteps.map { Float(interpolate(full, at: $0)) } + [0]
        prediction = schedule.config.prediction
    }

    public var initNoiseSigma: Float { 1 }
    public func scaleModelInput(_ sample: Tensor, step: Int) -> Tensor { sample }

    public mutating func step(modelOutput: Tensor, step: Int, sample: Tensor, noise: () -> Tensor) -> Tensor {
        // α_t = 1/√(σ²+1), σ_t = σ·α_t, λ = ln α_t − ln σ_t
        func alphaSigma(_ s: Float) -> (Double, Double) { let a = 1 / (Double(s) * Double(s) + 1).squareRoot(); return (a, Double(s) * a) }
        let (alphaS, sigmaS) = alphaSigma(sigmas[step]), (alphaT, sigmaT) = alphaSigma(sigmas[step + 1])
        let m: Tensor  // data prediction x̂0
        switch prediction {
        case .epsilon: m = combine(Float(1 / alphaS), sample, Float(-sigmaS / alphaS), modelOutput)
        case .vPrediction: m = combine(Float(alphaS), sample, Float(-sigmaS), modelOutput)
        }
        let lambdaS = log(alphaS) - log(sigmaS), lambdaT = log(alphaT) - log(sigmaT)
        let h = lambdaT - lambdaS
        let phi = alphaT * (exp(-h) - 1)
        let ratio = sigmaS > 0 ? sigmaT / sigmaS : 0
        let last = step == timesteps.count - 1
        defer { previousDataPrediction = m }
        guard let m1 = previousDataPrediction, !last, step > 0 else {
            return combine(Float(ratio), sample, Float(-phi), m)  // first order
        }
        let lambdaS1 = log(alphaSigma(sigmas[step - 1]).0) - log(alphaSigma(sigmas[step - 1]).1)
        let r0 = (lambdaS - lambdaS1) / h
        // D = m0 + ½·(m0 − m1)/r0
        let d = combine(Float(1 + 0.5 / r0), m, Float(-0.5 / r0), m1)
        return combine(Float(ratio), sample, Float(-phi), d)
    }
}
