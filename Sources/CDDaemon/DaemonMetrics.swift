import Foundation

/// The trainer's figures for `/metrics` (Prometheus text), updated by rank 0 after each step.
public final class DaemonMetrics: @unchecked Sendable {
    private let lock = NSLock()
    private var steps = 0
    private var stepSeconds = 0.0
    private var loss = Double.nan
    private var allreduceSeconds = 0.0
    private var running = 0
    private var checkpoints = 0
    public let worldSize: Int

    public init(worldSize: Int) { self.worldSize = worldSize }

    func recordStep(seconds: Double, loss: Double, allreduceSeconds: Double) {
        lock.withLock {
            steps += 1
            stepSeconds = seconds
            self.loss = loss
            self.allreduceSeconds = allreduceSeconds
        }
    }

    func recordCheckpoint() { lock.withLock { checkpoints += 1 } }

    func setRunning(_ on: Bool) { lock.withLock { running = on ? 1 : 0 } }

    public func prometheus() -> String {
        lock.withLock {
            func metric(_ name: String, _ type: String, _ help: String, _ value: Double) -> String {
                let v = value.isFinite ? String(value) : "NaN"
                return "# HELP cdtrainerd_\(name) \(help)\n# TYPE cdtrainerd_\(name) \(type)\ncdtrainerd_\(name) \(v)\n"
            }
            return metric("world_size", "gauge", "MPI ranks training.", Double(worldSize))
                + metric("training", "gauge", "1 while a job trains.", Double(running))
                + metric("steps_total", "counter", "Optimizer steps done since start.", Double(steps))
                + metric("steps_per_second", "gauge", "Optimizer steps per second (last step).", stepSeconds > 0 ? 1 / stepSeconds : 0)
                + metric("step_seconds", "gauge", "Seconds of the last optimizer step.", stepSeconds)
                + metric("loss", "gauge", "Loss of the last step.", loss)
                + metric("allreduce_seconds", "gauge", "Gradient allreduce time of the last step.", allreduceSeconds)
                + metric("checkpoints_total", "counter", "Checkpoints written since start.", Double(checkpoints))
        }
    }
}
