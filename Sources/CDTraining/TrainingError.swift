/// Errors of the training engine; each names the setting, file or token at fault.
public enum TrainingError: Error, CustomStringConvertible, Equatable {
    case invalidSetting(field: String, reason: String)
    case invalidToken(token: String, reason: String)
    case invalidState(file: String, reason: String)
    case nonFiniteLoss(step: Int, loss: Float)
    /// Another rank failed (its own error is in its log); nil rank: not known which.
    case rankFailed(rank: Int?, step: Int?)

    public var description: String {
        switch self {
        case let .invalidSetting(field, reason): "training setting '\(field)': \(reason)"
        case let .invalidToken(token, reason): "modifier token '\(token)': \(reason)"
        case let .invalidState(file, reason): "training state \(file): \(reason)"
        case let .nonFiniteLoss(step, loss): "the loss became \(loss) at step \(step); the job stops instead of training on garbage (lower the learning rate?)"
        case let .rankFailed(rank, step):
            "\(rank.map { "rank \($0)" } ?? "another rank") failed\(step.map { " after step \($0)" } ?? " while setting up the job") (its error is in that rank's log)"
        }
    }
}
