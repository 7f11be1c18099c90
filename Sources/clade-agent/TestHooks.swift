#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Pauses that widen a race window so a test can show it is closed, like the host's fault
/// points. Read once from the agent's environment; unset in every guest clade boots.
enum TestHooks {
    /// `CLADE_AGENT_TEST_ATTACH_PAUSE_MS`: how long `attach` waits after announcing `attached`
    /// and before the watcher is complete, so output made meanwhile would be lost if the two
    /// steps were not one.
    static let attachPauseMicroseconds: UInt32 = {
        guard let text = getenv("CLADE_AGENT_TEST_ATTACH_PAUSE_MS"), let milliseconds = UInt32(String(cString: text)) else { return 0 }
        return min(milliseconds, 10_000) * 1000
    }()

    static func pauseAfterAnnouncingAttach() {
        if attachPauseMicroseconds > 0 { usleep(attachPauseMicroseconds) }
    }
}
