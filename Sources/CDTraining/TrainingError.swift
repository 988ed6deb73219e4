/// Errors of the training engine; each names the setting, file or token at fault.
public enum TrainingError: Error, CustomStringConvertible, Equatable {
    case invalidSetting(field: String, reason: String)
    case invalidToken(token: String, reason: String)
    case invalidState(file: String, reason: String)
    case nonFiniteLoss(step: Int, loss: Float)

    public var description: String {
        switch self {
        case let .invalidSetting(field, reason): "training setting '\(field)': \(reason)"
        case let .invalidToken(token, reason): "modifier token '\(token)': \(reason)"
        case let .invalidState(file, reason): "training state \(file): \(reason)"
        case let .nonFiniteLoss(step, loss): "the loss became \(loss) at step \(step); the job stops instead of training on garbage (lower the learning rate?)"
        }
    }
}
