import Foundation

/// Shows the current step of long work on standard error: a spinner on a terminal,
/// one line per step otherwise (logs, CI). Silent with `--json` so output stays parseable.
final class ProgressReporter: @unchecked Sendable {
    private let lock = NSLock()
    private var step = ""
    private var running = true
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
            while lock.withLock({ running }) {
                let current = lock.withLock { step }
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
        lock.withLock { step = message }
        if !interactive { writeStandardError("==> \(message)\n") }
    }

    /// Clears the spinner line.
    func finish() {
        lock.withLock { running = false }
        if interactive && !quiet { writeStandardError("\r\u{1B}[2K") }
    }
}
