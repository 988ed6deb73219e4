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

    enum CodingKeys: String, CodingKey {
        case className = "_class_name", numTrainTimesteps = "num_train_timesteps", betaStart = "beta_start"
        case betaEnd = "beta_end", betaSchedule = "beta_schedule", predictionType = "prediction_type"
        case stepsOffset = "steps_offset", timestepSpacing = "timestep_spacing", setAlphaToOne = "set_alpha_to_one"
        case clipSample = "clip_sample", thresholding, rescaleBetasZeroSnr = "rescale_betas_zero_snr"
        case useKarrasSigmas = "use_karras_sigmas"
    }

    /// SD 1.x/2.x training schedule (diffusers' single-file defaults).
    public static let sd = SchedulerConfig(
        className: "DDIMScheduler", numTrainTimesteps: 1000, betaStart: 0.00085, betaEnd: 0.012, betaSchedule: "scaled_linear",
        predictionType: "epsilon", stepsOffset: 1, timestepSpacing: "leading", setAlphaToOne: false, clipSample: false,
        thresholding: false, rescaleBetasZeroSnr: false, useKarrasSigmas: false)

    public enum Prediction: String, Sendable { case epsilon, vPrediction = "v_prediction" }

    public var prediction: Prediction { Prediction(rawValue: predictionType ?? "epsilon") ?? .epsilon }

    public func validate(file: String) throws {
        func unsupported(_ field: String, _ value: String, _ supported: String) -> ModelError {
            .unsupportedConfig(file: file, field: field, value: value, supported: supported)
        }
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
    }
}
