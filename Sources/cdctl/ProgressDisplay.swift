import CDClient
import CDProtocol
import Foundation

/// `submit --wait` on stderr: on a terminal one progress line rewritten in place (`\r`) with the
/// other events printed above it; elsewhere (logs, CI) plain lines, progress at most once per
/// percent of the job.
final class ProgressDisplay {
    let enabled: Bool
    let terminal: Bool
    var bar = ProgressBar()
    let formatter = JobEventFormatter()
    /// The bar is on screen (terminal only).
    var barShown = false
    var lastPercent = -1

    init(enabled: Bool, terminal: Bool = Output.stderrIsTerminal) {
        self.enabled = enabled
        self.terminal = terminal
    }

    func show(_ e: JobEvent) {
        guard enabled else { return }
        guard e.kind == .progress else {
            clearBar()
            Output.note(formatter.line(e))
            if terminal, bar.step > 0 { drawBar() }
            return
        }
        bar.update(e)
        if terminal {
            drawBar()
        } else {
            let percent = bar.totalSteps > 0 ? bar.step * 100 / bar.totalSteps : 0
            if percent > lastPercent || bar.step == bar.totalSteps {
                lastPercent = percent
                Output.note(formatter.time(e.time) + "  " + bar.render(barWidth: 0))
            }
        }
    }

    /// Ends the display with the job's outcome.
    func finish(_ job: Job) {
        guard enabled else { return }
        clearBar()
        var text = "cdctl: job \(job.id) \(job.state)"
        if let start = job.startedAt, let end = job.finishedAt {
            text += " after " + ProgressBar.duration(end.timeIntervalSince(start))
        }
        if job.state == .failed, let error = job.error { text += ": \(error)" }
        Output.note(text)
    }

    func drawBar() {
        Output.progress("\r\u{1B}[K" + bar.render())
        barShown = true
    }

    func clearBar() {
        if barShown { Output.progress("\r\u{1B}[K") }
        barShown = false
    }
}
