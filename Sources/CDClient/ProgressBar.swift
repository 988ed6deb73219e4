import CDProtocol
import Foundation

/// The state of a running job as one line: `step 120/250 [########------]  48%  loss 0.1234  ETA 4m10s`.
/// The ETA is the remaining steps times the mean of the last `window` step durations (from the
/// progress events' `step_seconds`, else from the time between events).
public struct ProgressBar: Sendable {
    public var step = 0
    public var totalSteps = 0
    public var loss: Double?
    /// Recent seconds per step, newest last.
    var durations: [Double] = []
    var last: (step: Int, time: Date)?
    let window: Int

    public init(window: Int = 20) {
        self.window = window
    }

    /// Takes in a progress event (others are ignored).
    public mutating func update(_ e: JobEvent) {
        guard e.kind == .progress, let step = e.payload["step"]?.intValue else { return }
        if let total = e.payload["total_steps"]?.intValue { totalSteps = total }
        loss = e.payload["loss"]?.doubleValue
        if let s = e.payload["step_seconds"]?.doubleValue, s.isFinite, s >= 0 {
            record(s)
        } else if let last, step > last.step {
            record(e.time.timeIntervalSince(last.time) / Double(step - last.step))
        }
        last = (step, e.time)
        self.step = step
    }

    mutating func record(_ seconds: Double) {
        durations.append(seconds)
        if durations.count > window { durations.removeFirst(durations.count - window) }
    }

    /// Seconds left, nil before anything is known.
    public var eta: Double? {
        guard !durations.isEmpty, totalSteps > 0 else { return nil }
        return Double(max(0, totalSteps - step)) * durations.reduce(0, +) / Double(durations.count)
    }

    /// The line, with a bar of `barWidth` characters (no bar when 0).
    public func render(barWidth: Int = 24) -> String {
        var parts = ["step \(step)/\(totalSteps)"]
        let fraction = totalSteps > 0 ? min(1, Double(step) / Double(totalSteps)) : 0
        if barWidth > 0 {
            let filled = Int((fraction * Double(barWidth)).rounded(.down))
            parts.append("[" + String(repeating: "#", count: filled) + String(repeating: "-", count: barWidth - filled) + "]")
        }
        parts.append(String(format: "%3d%%", Int((fraction * 100).rounded(.down))))
        if let loss { parts.append("loss " + JobEventFormatter.number(loss, "%.4f")) }
        if let eta { parts.append("ETA " + Self.duration(eta)) }
        return parts.joined(separator: "  ")
    }

    /// `45s`, `4m10s`, `2h05m`.
    public static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "?" }
        let s = Int(seconds.rounded())
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m\(String(format: "%02d", s % 60))s" }
        return "\(s / 3600)h\(String(format: "%02d", s % 3600 / 60))m"
    }
}
