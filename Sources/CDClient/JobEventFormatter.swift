import CDProtocol
import Foundation

/// One compact line per job event, as `cdctl logs` prints them:
///
/// ```
/// 2026-11-27 10:30:00  state: queued → running
/// 2026-11-27 10:30:05  step 10/250  loss 0.1234  lr 1.00e-05  2.31 s/step
/// 2026-11-27 10:31:00  checkpoint at step 30: checkpoints/step-000030
/// 2026-11-27 10:31:02  error: the loss is NaN at step 31
/// 2026-11-27 10:31:02  [warning] …
/// ```
public struct JobEventFormatter: Sendable {
    public var timeZone: TimeZone

    public init(timeZone: TimeZone = .current) {
        self.timeZone = timeZone
    }

    /// Time and message.
    public func line(_ e: JobEvent) -> String {
        time(e.time) + "  " + Self.message(e)
    }

    /// `yyyy-MM-dd HH:mm:ss` in `timeZone`.
    public func time(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        return String(format: "%04d-%02d-%02d %02d:%02d:%02d", c.year ?? 0, c.month ?? 0, c.day ?? 0, c.hour ?? 0, c.minute ?? 0, c.second ?? 0)
    }

    /// The event without its time.
    public static func message(_ e: JobEvent) -> String {
        let p = e.payload
        switch e.kind {
        case .state:
            let from = p["from"]?.stringValue
            var text = "state: " + (from.map { $0 + " → " } ?? "") + (p["to"]?.stringValue ?? "?")
            if let reason = p["reason"]?.stringValue, !reason.isEmpty { text += " (\(reason))" }
            return text
        case .progress:
            var parts = ["step \(p["step"]?.intValue.map(String.init) ?? "?")/\(p["total_steps"]?.intValue.map(String.init) ?? "?")"]
            if let loss = p["loss"]?.doubleValue { parts.append("loss " + number(loss, "%.4f")) }
            if let lr = p["learning_rate"]?.doubleValue { parts.append("lr " + number(lr, "%.2e")) }
            if let s = p["step_seconds"]?.doubleValue { parts.append(number(s, "%.2f") + " s/step") }
            return parts.joined(separator: "  ")
        case .checkpoint:
            return "checkpoint at step \(p["step"]?.intValue.map(String.init) ?? "?")" + (p["path"]?.stringValue.map { ": " + $0 } ?? "")
        case .error:
            return "error: " + (p["message"]?.stringValue ?? compact(p))
        case .log:
            let message = p["message"]?.stringValue ?? compact(p)
            let level = p["level"]?.stringValue ?? "info"
            return level == "info" ? message : "[\(level)] \(message)"
        case .loss:
            return "loss: " + compact(p)
        }
    }

    /// A finite number in `format`; `nan`, `inf` as such.
    public static func number(_ x: Double, _ format: String) -> String {
        x.isFinite ? String(format: format, x) : "\(x)"
    }

    /// `key=value …` of an object (sorted keys), the JSON text of anything else.
    static func compact(_ v: JSONValue) -> String {
        guard case let .object(o) = v else { return (try? v.jsonText()) ?? "" }
        return o.keys.sorted().map { k in
            let value = o[k]!
            if let s = value.stringValue { return "\(k)=\(s)" }
            if case let .double(d) = value { return "\(k)=" + number(d, "%.4g") }
            return "\(k)=" + ((try? value.jsonText()) ?? "?")
        }.joined(separator: " ")
    }
}
