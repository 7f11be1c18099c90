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
        /// cgroup v1: one directory per controller below this one; clade's groups go in `base`
        /// (a path below each controller's root: "" as root, the delegated group unprivileged).
        case perController(URL, base: String = "")
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
    /// and pids controllers, else v1 when those controllers are mounted, else nothing.
    /// Unprivileged, clade can only use a v2 subtree delegated to its user (see
    /// ``delegatedSubtree(root:ownCgroup:uid:)``); without one it has nothing.
    public static func detect(root: URL = URL(fileURLWithPath: "/sys/fs/cgroup"), privileged: Bool = geteuid() == 0) -> Hierarchy {
        let explicit = ProcessInfo.processInfo.environment["CLADE_CGROUP"].flatMap { $0.isEmpty ? nil : $0 }
        let unified = FileManager.default.fileExists(atPath: root.appendingPathComponent("cgroup.controllers").path)
        if !privileged, !unified {
            return delegatedControllers(root: root, base: explicit, uid: geteuid())
        }
        guard privileged else {
            let own = (try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)).flatMap(unifiedPath(inProcCgroup:))
            return delegatedSubtree(root: root, ownCgroup: own, uid: geteuid(), explicit: explicit.map { root.appendingPathComponent(String($0.drop { $0 == "/" })) })
        }
        let controllers = root.appendingPathComponent("cgroup.controllers")
        if let text = try? String(contentsOf: controllers, encoding: .utf8) {
            let missing = missingControllers(in: text)
            return missing.isEmpty ? .unified(root) : .unavailable(reason: "cgroup v2 lacks the \(missing.joined(separator: ", ")) controller(s)")
        }
        let missing = v1Controllers.filter { !FileManager.default.fileExists(atPath: root.appendingPathComponent("\($0)/cgroup.procs").path) }
        return missing.isEmpty ? .perController(root) : .unavailable(reason: "no cgroup v2 and no v1 \(missing.joined(separator: ", ")) controller mounted")
    }

    /// The cgroup v2 subtree an unprivileged clade may use: `explicit` (`CLADE_CGROUP`) when
    /// given, else the highest group above clade's own (`ownCgroup`, a path below `root`) that
    /// `uid` owns, which is how systemd (`Delegate=yes`) and container runtimes hand a subtree
    /// to a user. Sandboxes' groups go below it in `clade/`; clade itself must run in a group
    /// below it, not in it, because a group with processes cannot hand controllers down.
    public static func delegatedSubtree(root: URL, ownCgroup: String?, uid: uid_t, explicit: URL? = nil) -> Hierarchy {
        let fix = "ask root to delegate a cgroup v2 subtree to you (systemd-run --user -p Delegate=yes, or mkdir and chown a group with its cgroup.procs, cgroup.subtree_control and cgroup.threads) and run clade in a group below it, or set CLADE_CGROUP to a delegated group"
        guard let own = ownCgroup else { return .unavailable(reason: "clade is not root and runs in no cgroup v2 group (\(fix))") }
        let ownDirectory = root.appendingPathComponent(String(own.drop { $0 == "/" }))
        let delegated: URL
        if let explicit {
            delegated = explicit
        } else {
            var candidate = root
            var found: URL?
            for component in own.split(separator: "/") {
                candidate = candidate.appendingPathComponent(String(component))
                if owner(of: candidate) == uid, owner(of: candidate.appendingPathComponent("cgroup.procs")) == uid {
                    found = candidate
                    break
                }
            }
            guard let found else { return .unavailable(reason: "clade is not root and owns no cgroup above its own (\(own)): \(fix)") }
            delegated = found
        }
        guard owner(of: delegated) == uid, owner(of: delegated.appendingPathComponent("cgroup.subtree_control")) == uid else {
            return .unavailable(reason: "\(delegated.path) is not delegated to uid \(uid): \(fix)")
        }
        guard delegated.standardizedFileURL.path != ownDirectory.standardizedFileURL.path else {
            return .unavailable(reason: "clade runs in its delegated group \(delegated.path) itself, which therefore cannot hand controllers down; run clade in a group below it (for example \(delegated.path)/session)")
        }
        guard let text = try? String(contentsOf: delegated.appendingPathComponent("cgroup.controllers"), encoding: .utf8) else {
            return .unavailable(reason: "\(delegated.path) is not a cgroup v2 group: \(fix)")
        }
        let missing = missingControllers(in: text)
        guard missing.isEmpty else {
            return .unavailable(reason: "the delegated group \(delegated.path) lacks the \(missing.joined(separator: ", ")) controller(s); its parent must enable them in cgroup.subtree_control")
        }
        return .unified(delegated)
    }

    /// cgroup v1 for an unprivileged clade: the group `base` (`CLADE_CGROUP`, a path below each
    /// controller's root) in the cpu, memory and pids hierarchies, each owned by `uid`. v1 has no
    /// delegation convention to discover, so it must be named.
    public static func delegatedControllers(root: URL, base: String?, uid: uid_t) -> Hierarchy {
        guard let base else {
            return .unavailable(reason: "clade is not root, and on cgroup v1 it needs a group delegated to it: ask root to make one in the cpu, memory and pids hierarchies, chown it (with its cgroup.procs) to you, and set CLADE_CGROUP to its path")
        }
        let relative = String(base.drop { $0 == "/" })
        for controller in v1Controllers {
            let group = root.appendingPathComponent(controller).appendingPathComponent(relative)
            guard owner(of: group) == uid, owner(of: group.appendingPathComponent("cgroup.procs")) == uid else {
                return .unavailable(reason: "CLADE_CGROUP=\(base) is not a group of the \(controller) hierarchy owned by uid \(uid) (\(group.path)); ask root to make and chown it")
            }
        }
        return .perController(root, base: relative)
    }

    /// The unified-hierarchy path in `/proc/self/cgroup`'s text (its `0::` line).
    static func unifiedPath(inProcCgroup text: String) -> String? {
        text.split(separator: "\n").first { $0.hasPrefix("0::") }.map { String($0.dropFirst(3)) }
    }

    private static func missingControllers(in text: String) -> [String] {
        let available = Set(text.split(whereSeparator: \.isWhitespace).map(String.init))
        return v1Controllers.filter { !available.contains($0) }
    }

    private static func owner(of url: URL) -> uid_t? {
        var info = stat()
        return stat(url.path, &info) == 0 ? info.st_uid : nil
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
        case .perController(let root, let base):
            for controller in Self.v1Controllers {
                let parent = Self.v1Directory(root, controller, base)
                try makeDirectory(parent)
                if controller == "memory" { try? write("1", to: parent.appendingPathComponent("memory.use_hierarchy")) }
                try makeDirectory(parent.appendingPathComponent(sandbox))
            }
            let cpu = Self.v1Directory(root, "cpu", base, sandbox)
            try write(String(Self.periodMicroseconds), to: cpu.appendingPathComponent("cpu.cfs_period_us"))
            try write(quota ?? "-1", to: cpu.appendingPathComponent("cpu.cfs_quota_us"))
            let memoryGroup = Self.v1Directory(root, "memory", base, sandbox)
            // Charges made before the move follow the process (the VMM ran briefly outside).
            try? write("3", to: memoryGroup.appendingPathComponent("memory.move_charge_at_immigrate"))
            try write(memory, to: memoryGroup.appendingPathComponent("memory.limit_in_bytes"))
            try? write(memory, to: memoryGroup.appendingPathComponent("memory.memsw.limit_in_bytes"))
            try write(String(limits.processes), to: Self.v1Directory(root, "pids", base, sandbox).appendingPathComponent("pids.max"))
            for controller in Self.v1Controllers {
                try write(String(pid), to: Self.v1Directory(root, controller, base, sandbox).appendingPathComponent("cgroup.procs"))
            }
        }
    }

    /// Changes a confined sandbox's CPU ceiling and memory ceiling in place (nil: unchanged).
    public func adjust(sandbox: String, memoryBytes: Int64?, cpuCores: Double?) throws {
        let quota = cpuCores.map { String(max(1000, Int($0 * Double(Self.periodMicroseconds)))) }
        switch hierarchy {
        case .unavailable(let reason):
            throw VMMError.confinementFailed(what: "change the sandbox's host limits", reason: reason, fix: "run clade as root on a host with cgroups (clade doctor)")
        case .unified(let root):
            let own = root.appendingPathComponent("\(Self.group)/\(sandbox)")
            if let quota { try write("\(quota) \(Self.periodMicroseconds)", to: own.appendingPathComponent("cpu.max")) }
            if let memoryBytes { try write(String(memoryBytes), to: own.appendingPathComponent("memory.max")) }
        case .perController(let root, let base):
            if let quota { try write(quota, to: Self.v1Directory(root, "cpu", base, sandbox).appendingPathComponent("cpu.cfs_quota_us")) }
            if let memoryBytes {
                let group = Self.v1Directory(root, "memory", base, sandbox)
                // memsw must stay at or above the plain limit: raise it first, lower it last.
                try? write(String(memoryBytes), to: group.appendingPathComponent("memory.memsw.limit_in_bytes"))
                try write(String(memoryBytes), to: group.appendingPathComponent("memory.limit_in_bytes"))
                try? write(String(memoryBytes), to: group.appendingPathComponent("memory.memsw.limit_in_bytes"))
            }
        }
    }

    /// True when the kernel killed a process of the sandbox's group for passing its memory ceiling.
    public func wasOutOfMemory(sandbox: String) -> Bool {
        let file: URL
        switch hierarchy {
        case .unavailable: return false
        case .unified(let root): file = root.appendingPathComponent("\(Self.group)/\(sandbox)/memory.events")
        case .perController(let root, let base): file = Self.v1Directory(root, "memory", base, sandbox).appendingPathComponent("memory.oom_control")
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
        case .perController(let root, let base):
            for controller in Self.v1Controllers { rmdir(Self.v1Directory(root, controller, base, sandbox).path) }
        }
    }

    /// `root/<controller>/<base>/clade[/<sandbox>]`: a sandbox's group under one v1 controller.
    public static func v1Directory(_ root: URL, _ controller: String, _ base: String, _ sandbox: String? = nil) -> URL {
        let path = [controller, base, group, sandbox ?? ""].filter { !$0.isEmpty }.joined(separator: "/")
        return root.appendingPathComponent(path)
    }

    /// Where the sandbox's group is, for diagnostics and tests (v1: its memory group).
    public func directory(of sandbox: String) -> URL? {
        switch hierarchy {
        case .unavailable: return nil
        case .unified(let root): return root.appendingPathComponent("\(Self.group)/\(sandbox)")
        case .perController(let root, let base): return Self.v1Directory(root, "memory", base, sandbox)
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
