#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxShims

/// Holds every user process still while the host captures the guest, so that after a restore
/// nothing runs before the agent has given the guest its own identity and RNG seed.
///
/// Siblings restored from one snapshot start with the same kernel RNG state; a process that
/// drew random numbers between the restore and the reseed would draw the same ones in every
/// sibling. Freezing (cgroup v2's `cgroup.freeze`) is invisible to the processes and their
/// parents, unlike SIGSTOP, which an interactive shell reports as a stopped job.
///
/// The same group bounds user processes' memory: without that, a guest whose user filled its RAM
/// with tmpfs could leave the agent (PID 1, which the OOM killer spares) no memory to answer. It
/// also caps their number and makes them share the CPU as one group, so a fork bomb cannot
/// starve the agent either.
enum UserFreezer {
    static let hierarchy = "/sys/fs/cgroup"
    static let group = "/sys/fs/cgroup/clade-user"
    /// Memory kept out of the user group's reach, for the kernel and the agent.
    static let reservedBytes = 64 << 20
    /// Processes and threads user processes may have together, two per MiB of guest memory (at
    /// least 256): a fork bomb stops there, before the tasks' kernel memory, which the memory
    /// cap does not see, exhausts the guest (4096 did, in a 256 MiB guest). With the cpu
    /// controller the group competes with the agent as one, so the agent still answers.
    static func userTaskLimit(memoryBytes: Int) -> Int { max(256, 2 * (memoryBytes >> 20)) }

    /// At start, as the guest's init: every process the agent spawns from now on starts in the
    /// user group, which may use all of the guest's memory but `reservedBytes`. Failures leave
    /// processes where they were (an older guest kernel), with a log line.
    static func setUp() {
        guard getpid() == 1 else { return }
        do {
            try prepare()
            // One controller at a time: a kernel without one of them still gets the others.
            for controller in ["+memory", "+pids", "+cpu"] { _ = writeText(controller, to: "\(hierarchy)/cgroup.subtree_control") }
            let total = readSmallFile("/proc/meminfo").split(separator: "\n").first { $0.hasPrefix("MemTotal:") }
                .flatMap { $0.split(whereSeparator: \.isWhitespace).dropFirst().first }.flatMap { Int($0) }.map { $0 << 10 }
            if !writeText("\(userTaskLimit(memoryBytes: total ?? 0))", to: "\(group)/pids.max") {
                log("cannot bound user processes' number: \(String(cString: strerror(errno)))")
            }
            if let total, total > 2 * reservedBytes {
                if !writeText("\(total - reservedBytes)", to: "\(group)/memory.max") {
                    log("cannot bound user processes' memory: \(String(cString: strerror(errno)))")
                }
            }
            let procs = open("\(group)/cgroup.procs", O_WRONLY | O_CLOEXEC)
            if procs >= 0 { clade_set_spawn_cgroup(procs) }
        } catch {
            log("user processes stay in the root cgroup: \(error)")
        }
    }

    /// Moves every user process into the user group and freezes it. Returns how many processes
    /// are held; throws when the guest cannot freeze (no cgroup v2 in its kernel).
    static func freeze(timeoutMilliseconds: Int = 2000) throws -> Int {
        // Never on a host: only the guest's init may freeze everything else.
        guard getpid() == 1 else { throw CommandError(description: "freeze only runs as the guest's init (pid 1)") }
        try prepare()
        guard writeText("1", to: "\(group)/cgroup.freeze") else {
            throw CommandError(description: "cannot freeze \(group): \(String(cString: strerror(errno)))")
        }
        // A process that forks while the others move leaves its child in the root group; the
        // loop moves stragglers into the frozen group (which freezes them) until none is left.
        var waited = 0
        while true {
            let stragglers = userProcessesOutsideGroup()
            for pid in stragglers { _ = writeText("\(pid)", to: "\(group)/cgroup.procs") }
            if stragglers.isEmpty && isFrozen() { break }
            guard waited < timeoutMilliseconds else {
                thaw()
                throw CommandError(description: "user processes did not freeze within \(timeoutMilliseconds) ms (one may be in uninterruptible sleep)")
            }
            usleep(1000)
            waited += 1
        }
        return heldCount()
    }

    /// Lets held processes run again; a no-op when nothing is held.
    static func thaw() {
        guard access("\(group)/cgroup.freeze", F_OK) == 0 else { return }
        _ = writeText("0", to: "\(group)/cgroup.freeze")
    }

    static func prepare() throws {
        let flags = UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC)
        if access("\(hierarchy)/cgroup.procs", F_OK) != 0 {
            mkdir(hierarchy, 0o755)
            // `favordynmods`: every command the agent starts moves into the user group, and a
            // move otherwise waits out an RCU grace period, ~17 ms of each `clade exec` under
            // TCG. A kernel before 6.0 does not know the option and mounts without it.
            guard mount("cgroup2", hierarchy, "cgroup2", flags, "favordynmods") == 0
                || mount("cgroup2", hierarchy, "cgroup2", flags, nil) == 0
            else {
                throw CommandError(description: "cannot mount cgroup2 at \(hierarchy): \(String(cString: strerror(errno)))")
            }
        } else if !readSmallFile("/proc/self/mounts").contains("favordynmods") {
            // Mounted before the agent ran (an initramfs, a snapshot baked by an older agent).
            _ = mount(nil, hierarchy, nil, UInt(MS_REMOUNT) | flags, "favordynmods")
        }
        if mkdir(group, 0o755) != 0 && errno != EEXIST {
            throw CommandError(description: "cannot create \(group): \(String(cString: strerror(errno)))")
        }
        guard access("\(group)/cgroup.freeze", F_OK) == 0 else {
            throw CommandError(description: "\(hierarchy) is not a cgroup v2 hierarchy with a freezer")
        }
    }

    /// Processes other than the agent that are not in the held group. Kernel threads are left
    /// out: they have no executable and cannot be moved.
    static func userProcessesOutsideGroup() -> [Int32] {
        guard let directory = opendir("/proc") else { return [] }
        defer { closedir(directory) }
        var found: [Int32] = []
        let agent = getpid()
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let pid = Int32(name), pid != agent, pid != 1 else { continue }
            var target = [CChar](repeating: 0, count: 8)
            guard readlink("/proc/\(pid)/exe", &target, target.count) >= 0 || errno == ENAMETOOLONG else { continue }
            let membership = readSmallFile("/proc/\(pid)/cgroup")
            if membership.isEmpty || membership.contains("0::/clade-user") { continue }
            found.append(pid)
        }
        return found
    }

    static func isFrozen() -> Bool {
        readSmallFile("\(group)/cgroup.events").split(separator: "\n").contains("frozen 1")
    }

    static func heldCount() -> Int {
        readSmallFile("\(group)/cgroup.procs").split(separator: "\n").count
    }

    static func writeText(_ text: String, to path: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        return write(fd, bytes, bytes.count) == bytes.count
    }
}
