import CladeStore
import Foundation

/// Shows the current step of long work on standard error: a spinner on a terminal,
/// one line per step otherwise (logs, CI). Silent with `--json` so output stays parseable.
final class ProgressReporter: Sendable {
    private struct Shown {
        var step = ""
        var running = true
    }
    private let shown = Locked(Shown())
    private let interactive: Bool
    private let quiet: Bool
    private let start = Date()

    init(quiet: Bool = false) {
        self.quiet = quiet
        interactive = isatty(2) == 1
        guard interactive, !quiet else { return }
        Thread.detachNewThread { [self] in
            let frames = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"]
            var index = 0
            while shown.withLock({ $0.running }) {
                let current = shown.withLock { $0.step }
                if !current.isEmpty {
                    let elapsed = String(format: "%.1fs", Date().timeIntervalSince(start))
                    writeStandardError("\r\u{1B}[2K\(frames[index % frames.count]) \(current) (\(elapsed))")
                }
                index += 1
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
    }

    /// Reports the start of a step.
    func update(_ message: String) {
        guard !quiet else { return }
        shown.withLock { $0.step = message }
        if !interactive { writeStandardError("==> \(message)\n") }
    }

    /// Reports progress through a step of known size: a bar on a terminal, the step's name otherwise.
    func update(_ message: String, done: Int64, total: Int64) {
        guard !quiet else { return }
        guard interactive, total > 0 else {
            let changed = shown.withLock { shown -> Bool in
                defer { shown.step = message }
                return shown.step != message
            }
            if changed && !interactive { writeStandardError("==> \(message)\n") }
            return
        }
        let fraction = min(1, Double(done) / Double(total))
        let width = 24
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
        let text = "\(message) \(bar) \(Int(fraction * 100))% \(formatBytes(done))/\(formatBytes(total))"
        shown.withLock { $0.step = text }
    }

    /// Clears the spinner line.
    func finish() {
        shown.withLock { $0.running = false }
        if interactive && !quiet { writeStandardError("\r\u{1B}[2K") }
    }
}

/// Bytes for people: "12.3 MiB".
func formatBytes(_ bytes: Int64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024, unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : "\(String(format: "%.1f", value)) \(units[unit])"
}
