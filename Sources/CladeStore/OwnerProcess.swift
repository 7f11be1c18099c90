#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A process named by pid and start time, so a record left by a dead process is not mistaken
/// for a live one when the kernel reuses its pid.
public struct OwnerProcess: Sendable, Equatable {
    public var pid: Int32
    /// Field 22 of `/proc/PID/stat` (clock ticks after boot), as text; empty when unknown.
    public var start: String

    public init(pid: Int32, start: String) {
        self.pid = pid
        self.start = start
    }

    /// This process.
    public static var current: OwnerProcess {
        let pid = getpid()
        return OwnerProcess(pid: pid, start: startTime(of: pid) ?? "")
    }

    /// True while the process that was recorded still runs (same pid, same start time).
    public var isAlive: Bool {
        guard pid > 0 else { return false }
        if pid == getpid() { return start.isEmpty || start == Self.startTime(of: pid) }
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let now = Self.startTime(of: pid) else { return false }
        return start.isEmpty || start == now
    }

    static func startTime(of pid: Int32) -> String? {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/stat"),
              let text = String(data: data, encoding: .utf8),
              let close = text.lastIndex(of: ")")
        else { return nil }
        // After the parenthesised command name: state is field 3, start time field 22.
        let fields = text[text.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? String(fields[19]) : nil
    }
}
