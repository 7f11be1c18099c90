import CladeVMM
import Foundation
import SwiftProtobuf

/// The VMM's cgroup figures in the form containerd's `Stats` carries: cgroups v1 or v2
/// `Metrics`, whichever hierarchy clade confines its VMMs in.
enum PodStats {
    static func metrics(sandbox: String, vmmPid: Int32, in groups: ControlGroups) throws -> Google_Protobuf_Any {
        switch groups.hierarchy {
        case .unified(let root):
            let directory = root.appendingPathComponent("clade/\(sandbox)")
            var metrics = Io_Containerd_Cgroups_V2_Metrics()
            metrics.pids.current = number(directory, "pids.current") ?? 0
            metrics.pids.limit = number(directory, "pids.max") ?? 0
            metrics.memory.usage = number(directory, "memory.current") ?? 0
            metrics.memory.usageLimit = number(directory, "memory.max") ?? 0
            for (key, value) in pairs(directory, "cpu.stat") {
                switch key {
                case "usage_usec": metrics.cpu.usageUsec = value
                case "user_usec": metrics.cpu.userUsec = value
                case "system_usec": metrics.cpu.systemUsec = value
                case "nr_throttled": metrics.cpu.nrThrottled = value
                default: break
                }
            }
            return try Google_Protobuf_Any(bare: metrics)
        case .perController(let root, let base):
            var metrics = Io_Containerd_Cgroups_V1_Metrics()
            let memory = ControlGroups.v1Directory(root, "memory", base, sandbox)
            metrics.memory.usage.usage = number(memory, "memory.usage_in_bytes") ?? 0
            metrics.memory.usage.limit = number(memory, "memory.limit_in_bytes") ?? 0
            metrics.memory.usage.max = number(memory, "memory.max_usage_in_bytes") ?? 0
            for (key, value) in pairs(memory, "memory.stat") {
                switch key {
                case "rss": metrics.memory.rss = value
                case "cache": metrics.memory.cache = value
                case "total_inactive_file": metrics.memory.totalInactiveFile = value
                default: break
                }
            }
            let pids = ControlGroups.v1Directory(root, "pids", base, sandbox)
            metrics.pids.current = number(pids, "pids.current") ?? 0
            metrics.pids.limit = number(pids, "pids.max") ?? 0
            metrics.cpu.usage.total = number(ControlGroups.v1Directory(root, "cpuacct", base, sandbox), "cpuacct.usage") ?? processCPUNanoseconds(vmmPid)
            return try Google_Protobuf_Any(bare: metrics)
        case .unavailable(let reason):
            throw TTRPCError.status(.unimplemented, "this host gives clade no cgroups to read the pod's figures from: \(reason)")
        }
    }

    private static func lines(_ directory: URL, _ file: String) -> [Substring] {
        ((try? String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)) ?? "").split(separator: "\n")
    }

    /// The `key value` lines of a cgroup statistics file.
    private static func pairs(_ directory: URL, _ file: String) -> [(Substring, UInt64)] {
        lines(directory, file).compactMap { line in
            let words = line.split(separator: " ")
            guard words.count == 2, let value = UInt64(words[1]) else { return nil }
            return (words[0], value)
        }
    }

    private static func number(_ directory: URL, _ file: String) -> UInt64? {
        lines(directory, file).first.flatMap { UInt64($0.trimmingCharacters(in: .whitespaces)) }
    }

    /// User plus system time of `pid` from `/proc/PID/stat`, for a v1 host whose cpuacct group
    /// clade does not make.
    static func processCPUNanoseconds(_ pid: Int32) -> UInt64 {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = text.lastIndex(of: ")") else { return 0 }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, utime 14 and stime 15 (1-based) of the whole line.
        guard fields.count > 12, let user = UInt64(fields[11]), let system = UInt64(fields[12]) else { return 0 }
        let ticks = UInt64(max(1, sysconf(Int32(_SC_CLK_TCK))))
        return (user + system) * 1_000_000_000 / ticks
    }
}
