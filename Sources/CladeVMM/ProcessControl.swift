#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Liveness checks and signals for processes clade did not necessarily start itself
/// (QEMU daemonizes, so after a restart of clade it is nobody's child).
public enum ProcessControl {
    /// True when `pid` runs and its command line contains `marker` (guards against pid reuse).
    public static func isAlive(_ pid: Int32, marker: String) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        if data.isEmpty { return false }  // a zombie has an empty command line
        let commandLine = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
        return commandLine.contains(marker)
    }

    /// ``isAlive(_:marker:)`` for a process clade has just started: also true while it is still
    /// inside the `execve` that gives it `marker`. The exec closes the descriptor clade's spawner
    /// waits on before the new command line is in place, and in that window `/proc/<pid>/cmdline`
    /// reads empty, as a zombie's does; only the process state tells them apart.
    public static func isStarting(_ pid: Int32, marker: String) -> Bool {
        if isAlive(pid, marker: marker) { return true }
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM,
              let command = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), command.isEmpty,
              let stat = FileManager.default.contents(atPath: "/proc/\(pid)/stat"),
              let close = stat.lastIndex(of: UInt8(ascii: ")")), close + 2 < stat.count
        else { return false }
        // After the parenthesised name: a space, then the state letter (Z zombie, X dead).
        let state = stat[close + 2]
        return state != UInt8(ascii: "Z") && state != UInt8(ascii: "X")
    }

    /// Waits until the process is gone or `timeout` passes; returns whether it is gone.
    public static func waitForExit(_ pid: Int32, marker: String, timeout: Double) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if !isAlive(pid, marker: marker) { return true }
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        return !isAlive(pid, marker: marker)
    }

    /// Sends SIGKILL if the process is still the one we expect.
    public static func forceKill(_ pid: Int32, marker: String) {
        if isAlive(pid, marker: marker) { kill(pid, SIGKILL) }
    }

    /// The real uid and gid `pid` runs as, from `/proc/PID/status`.
    public static func owner(of pid: Int32) -> (uid: UInt32, gid: UInt32)? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        func first(_ key: String) -> UInt32? {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(key + ":") }) else { return nil }
            return line.split(whereSeparator: \.isWhitespace).dropFirst().first.flatMap { UInt32($0) }
        }
        guard let uid = first("Uid"), let gid = first("Gid") else { return nil }
        return (uid, gid)
    }

    /// Reads a pid file; nil when absent or unparsable.
    public static func readPidFile(_ url: URL) -> Int32? {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { return nil }
        return Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}

/// Picks free TCP ports on the loopback interface.
public enum PortAllocator {
    /// Binds port 0 on 127.0.0.1 and returns the port the kernel chose. Another process may take
    /// it before QEMU binds it; callers retry a launch that fails on the forward rule.
    public static func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw VMMError.launchFailed(backend: "clade", reason: "cannot create a socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr = in_addr(s_addr: inet_addr("127.0.0.1"))
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Bool in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw VMMError.launchFailed(backend: "clade", reason: "cannot reserve a loopback port: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Facts about the host that guest command lines depend on.
public enum HostInfo {
    /// The host TSC rate in kHz, for `tsc_early_khz=` (simultaneous TCG boots hang without it).
    public static func tscKHz() -> Int? {
        guard let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return nil }
        for line in cpuinfo.split(separator: "\n") where line.hasPrefix("cpu MHz") {
            if let value = line.split(separator: ":").last.flatMap({ Double($0.trimmingCharacters(in: .whitespaces)) }) {
                return Int(value * 1000)
            }
        }
        return nil
    }
}
