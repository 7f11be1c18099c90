#if canImport(Glibc)
import Glibc
#endif
import CladeModel
import CladeStore
import Foundation

/// Puts each sandbox's VMM in a control group of its own, `clade/<sandbox id>`, with a CPU quota,
/// a memory ceiling (the kernel's OOM killer ends the VMM, not the host, when it passes it) and a
/// process cap. Works on the unified hierarchy (v2) and on the per-controller v1 hierarchies.
public struct ControlGroups: Sendable {
    public enum Hierarchy: Sendable, Equatable {
        /// cgroup v2 mounted at this directory, with these controllers available.
        case unified(URL)
        /// cgroup v1: one directory per controller below this one.
        case perController(URL)
        case unavailable(reason: String)

        public var name: String {
            switch self {
            case .unified: return "cgroup v2"
            case .perController: return "cgroup v1"
            case .unavailable: return "none"
            }
        }
    }

    public static let periodMicroseconds = 100_000
    static let group = "clade"
    static let v1Controllers = ["cpu", "memory", "pids"]

    public let hierarchy: Hierarchy

    public init(hierarchy: Hierarchy) {
        self.hierarchy = hierarchy
    }

    /// What this host has: v2 when `/sys/fs/cgroup` is the unified hierarchy with the cpu, memory
    /// and pids controllers, else v1 when those controllers are mounted, else nothing (clade
    /// not root counts as nothing: it cannot create groups).
    public static func detect(root: URL = URL(fileURLWithPath: "/sys/fs/cgroup"), privileged: Bool = geteuid() == 0) -> Hierarchy {
        guard privileged else { return .unavailable(reason: "clade is not root") }
        let controllers = root.appendingPathComponent("cgroup.controllers")
        if let text = try? String(contentsOf: controllers, encoding: .utf8) {
            let available = Set(text.split(whereSeparator: \.isWhitespace).map(String.init))
            let missing = Set(v1Controllers).subtracting(available)
            return missing.isEmpty ? .unified(root) : .unavailable(reason: "cgroup v2 lacks the \(missing.sorted().joined(separator: ", ")) controller(s)")
        }
        let missing = v1Controllers.filter { !FileManager.default.fileExists(atPath: root.appendingPathComponent("\($0)/cgroup.procs").path) }
        return missing.isEmpty ? .perController(root) : .unavailable(reason: "no cgroup v2 and no v1 \(missing.joined(separator: ", ")) controller mounted")
    }

    /// Creates the sandbox's group with `limits` and moves `pid` (all its threads) into it.
    public func confine(pid: Int32, sandbox: String, limits: SandboxLimits) throws {
        let memory = String(Int64(limits.memoryMiB) << 20)
        let quota = limits.cpuCores.map { String(max(1000, Int($0 * Double(Self.periodMicroseconds)))) }
        switch hierarchy {
        case .unavailable(let reason):
            throw VMMError.confinementFailed(what: "limit the sandbox's host resources", reason: reason, fix: "run clade as root on a host with cgroups (clade doctor)")
        case .unified(let root):
            let parent = root.appendingPathComponent(Self.group)
            try makeDirectory(parent)
            // Controllers must be enabled on every level above a group that uses them.
            try? write("+cpu +memory +pids", to: root.appendingPathComponent("cgroup.subtree_control"))
            try write("+cpu +memory +pids", to: parent.appendingPathComponent("cgroup.subtree_control"))
            let own = parent.appendingPathComponent(sandbox)
            try makeDirectory(own)
            try write("\(quota ?? "max") \(Self.periodMicroseconds)", to: own.appendingPathComponent("cpu.max"))
            try write(memory, to: own.appendingPathComponent("memory.max"))
            // Past the ceiling the VMM is killed rather than pushed into swap.
            try? write("0", to: own.appendingPathComponent("memory.swap.max"))
            try write(String(limits.processes), to: own.appendingPathComponent("pids.max"))
            try write(String(pid), to: own.appendingPathComponent("cgroup.procs"))
        case .perController(let root):
            for controller in Self.v1Controllers {
                let parent = root.appendingPathComponent("\(controller)/\(Self.group)")
                try makeDirectory(parent)
                if controller == "memory" { try? write("1", to: parent.appendingPathComponent("memory.use_hierarchy")) }
                try makeDirectory(parent.appendingPathComponent(sandbox))
            }
            let cpu = root.appendingPathComponent("cpu/\(Self.group)/\(sandbox)")
            try write(String(Self.periodMicroseconds), to: cpu.appendingPathComponent("cpu.cfs_period_us"))
            try write(quota ?? "-1", to: cpu.appendingPathComponent("cpu.cfs_quota_us"))
            let memoryGroup = root.appendingPathComponent("memory/\(Self.group)/\(sandbox)")
            // Charges made before the move follow the process (the VMM ran briefly outside).
            try? write("3", to: memoryGroup.appendingPathComponent("memory.move_charge_at_immigrate"))
            try write(memory, to: memoryGroup.appendingPathComponent("memory.limit_in_bytes"))
            try? write(memory, to: memoryGroup.appendingPathComponent("memory.memsw.limit_in_bytes"))
            try write(String(limits.processes), to: root.appendingPathComponent("pids/\(Self.group)/\(sandbox)/pids.max"))
            for controller in Self.v1Controllers {
                try write(String(pid), to: root.appendingPathComponent("\(controller)/\(Self.group)/\(sandbox)/cgroup.procs"))
            }
        }
    }

    /// True when the kernel killed a process of the sandbox's group for passing its memory ceiling.
    public func wasOutOfMemory(sandbox: String) -> Bool {
        let file: URL
        switch hierarchy {
        case .unavailable: return false
        case .unified(let root): file = root.appendingPathComponent("\(Self.group)/\(sandbox)/memory.events")
        case .perController(let root): file = root.appendingPathComponent("memory/\(Self.group)/\(sandbox)/memory.oom_control")
        }
        guard let text = try? String(contentsOf: file, encoding: .utf8) else { return false }
        return text.split(separator: "\n").contains { line in
            let words = line.split(separator: " ")
            return words.count == 2 && words[0] == "oom_kill" && (Int(words[1]) ?? 0) > 0
        }
    }

    /// Removes the sandbox's group (its processes must be gone; a busy group is left for later).
    public func remove(sandbox: String) {
        switch hierarchy {
        case .unavailable: return
        case .unified(let root): rmdir(root.appendingPathComponent("\(Self.group)/\(sandbox)").path)
        case .perController(let root):
            for controller in Self.v1Controllers { rmdir(root.appendingPathComponent("\(controller)/\(Self.group)/\(sandbox)").path) }
        }
    }

    private func makeDirectory(_ url: URL) throws {
        guard mkdir(url.path, 0o755) == 0 || errno == EEXIST else {
            throw VMMError.confinementFailed(what: "create the control group \(url.path)", reason: String(cString: strerror(errno)), fix: "check that the cgroup filesystem is mounted read-write (clade doctor)")
        }
    }

    private func write(_ value: String, to file: URL) throws {
        let fd = open(file.path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw VMMError.confinementFailed(what: "open \(file.path)", reason: String(cString: strerror(errno)), fix: "check the host's cgroup setup (clade doctor)")
        }
        defer { close(fd) }
        let written = value.withCString { Glibc.write(fd, $0, strlen($0)) }
        guard written >= 0 else {
            throw VMMError.confinementFailed(what: "write '\(value)' to \(file.path)", reason: String(cString: strerror(errno)), fix: "choose a value the kernel accepts")
        }
    }
}
