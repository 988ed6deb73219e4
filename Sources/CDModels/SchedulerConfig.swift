import Foundation

/// A diffusers scheduler config (`scheduler/scheduler_config.json`, any of the SD schedulers):
/// the training noise schedule plus the sampling options the samplers read. Unknown keys ignored.
public struct SchedulerConfig: Codable, Sendable, Equatable {
    public var className: String?
    public var numTrainTimesteps: Int
    public var betaStart: Double
    public var betaEnd: Double
    public var betaSchedule: String
    public var predictionType: String?
    public var stepsOffset: Int?
    public var timestepSpacing: String?
    public var setAlphaToOne: Bool?
    public var clipSample: Bool?
    public var thresholding: Bool?
    public var rescaleBetasZeroSnr: Bool?
    public var useKarrasSigmas: Bool?
    public var trainedBetas: [Double]?
    public var algorithmType: String?
    public var solverOrder: Int?
    public var finalSigmasType: String?
    public var useExponentialSigmas: Bool?
    public var useBetaSigmas: Bool?
    public var timestepType: String?
    public var interpolationType: String?

    enum CodingKeys: String, CodingKey {
        case className = "_class_name", numTrainTimesteps = "num_train_timesteps", betaStart = "beta_start"
        case betaEnd = "beta_end", betaSchedule = "beta_schedule", predictionType = "prediction_type"
        case stepsOffset = "steps_offset", timestepSpacing = "timestep_spacing", setAlphaToOne = "set_alpha_to_one"
        case clipSample = "clip_sample", thresholding, rescaleBetasZeroSnr = "rescale_betas_zero_snr"
        case useKarrasSigmas = "use_karras_sigmas", trainedBetas = "trained_betas", algorithmType = "algorithm_type"
        case solverOrder = "solver_order", finalSigmasType = "final_sigmas_type", useExponentialSigmas = "use_exponential_sigmas"
        case useBetaSigmas = "use_beta_sigmas", timestepType = "timestep_type", interpolationType = "interpolation_type"
    }

    /// SD 1.x/2.x training schedule (diffusers' single-file defaults).
    public static let sd = SchedulerConfig(
        className: "DDIMScheduler", numTrainTimesteps: 1000, betaStart: 0.00085, betaEnd: 0.012, betaSchedule: "scaled_linear",
        predictionType: "epsilon", stepsOffset: 1, timestepSpacing: "leading", setAlphaToOne: false, clipSample: false,
        thresholding: false, rescaleBetasZeroSnr: false, useKarrasSigmas: false, trainedBetas: nil, algorithmType: nil,
        solverOrder: nil, finalSigmasType: nil, useExponentialSigmas: nil, useBetaSigmas: nil, timestepType: nil,
        interpolationType: nil)

    public enum Prediction: String, Sendable { case epsilon, vPrediction = "v_prediction" }

    public var prediction: Prediction { Prediction(rawValue: predictionType ?? "epsilon") ?? .epsilon }

    public func validate(file: String) throws {
        let unsupported = ConfigValidator(file: file).unsupported
        guard ["scaled_linear", "linear"].contains(betaSchedule) else { throw unsupported("beta_schedule", betaSchedule, "scaled_linear, linear") }
        if let p = predictionType, Prediction(rawValue: p) == nil { throw unsupported("prediction_type", p, "epsilon, v_prediction") }
        if let s = timestepSpacing, !["leading", "trailing", "linspace"].contains(s) {
            throw unsupported("timestep_spacing", s, "leading, trailing, linspace")
        }
        guard numTrainTimesteps > 1 else { throw unsupported("num_train_timesteps", "\(numTrainTimesteps)", "more than 1") }
        if clipSample == true { throw unsupported("clip_sample", "true", "false") }
        if thresholding == true { throw unsupported("thresholding", "true", "false") }
        if rescaleBetasZeroSnr == true { throw unsupported("rescale_betas_zero_snr", "true", "false") }
        if useKarrasSigmas == true { throw unsupported("use_karras_sigmas", "true", "false") }
        if useExponentialSigmas == true { throw unsupported("use_exponential_sigmas", "true", "false") }
        if useBetaSigmas == true { throw unsupported("use_beta_sigmas", "true", "false") }
        if trainedBetas != nil { throw unsupported("trained_betas", "a list", "null") }
        if let a = algorithmType, a != "dpmsolver++" { throw unsupported("algorithm_type", a, "dpmsolver++") }
        if let o = solverOrder, o != 2 { throw unsupported("solver_order", "\(o)", "2") }
        if let f = finalSigmasType, f != "zero" { throw unsupported("final_sigmas_type", f, "zero") }
        if let t = timestepType, t != "discrete" { throw unsupported("timestep_type", t, "discrete") }
        if let i = interpolationType, i != "linear" { throw unsupported("interpolation_type", i, "linear") }
    }
}
