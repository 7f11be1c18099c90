#if canImport(Glibc)
import Glibc
#endif
import CLinuxShims
import Foundation

/// Starts programs that daemonize themselves (QEMU's `-daemonize`).
///
/// Foundation's `Process` cannot be used for these: the daemon inherits the descriptors
/// Process uses to watch its child and keeps them open, so Process never sees the exit.
/// Here the child gets /dev/null for stdin, a log file for stdout and stderr, and no
/// other descriptor of ours; we wait only for the direct child.
public enum DetachedLauncher {
    /// Runs `executable` and waits for the direct child to exit; returns its exit status.
    public static func run(_ executable: URL, arguments: [String], log: URL) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        clade_spawn_addclosefrom(&actions, 3)
        let argv = [executable.path] + arguments
        let pointers = argv.map { strdup($0) } + [nil]
        defer { pointers.forEach { free($0) } }
        var pid: pid_t = 0
        let result = Spawn.withCleanSignals { attributes in posix_spawn(&pid, executable.path, &actions, &attributes, pointers, environ) }
        guard result == 0 else { throw StoreError.systemCall("posix_spawn", path: executable.path, errno: result) }
        return try Spawn.wait(pid, path: executable.path)
    }

    /// `run`, with the program started inside a mount view of its own (see
    /// `clade_spawn_in_mount_view`): a tmpfs at `root` holding `systemDirectories` read-only,
    /// the `devices` that exist, and `machineDirectory` at its own path. One fork, no helper
    /// programs.
    public static func runInMountView(
        _ executable: URL, arguments: [String], log: URL, root: URL, machineDirectory: URL, systemDirectories: [String], devices: [String]
    ) throws -> Int32 {
        let logFD = open(log.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard logFD >= 0 else { throw StoreError.systemCall("open", path: log.path, errno: errno) }
        defer { close(logFD) }
        func cStrings(_ strings: [String]) -> [UnsafeMutablePointer<CChar>?] { strings.map { strdup($0) } + [nil] }
        let argv = cStrings([executable.path] + arguments)
        let system = cStrings(systemDirectories)
        let nodes = cStrings(devices)
        defer { (argv + system + nodes).forEach { free($0) } }
        let systemList = system.map { $0.map { UnsafePointer($0) } }
        let nodeList = nodes.map { $0.map { UnsafePointer($0) } }
        let pid = clade_spawn_in_mount_view(root.path, machineDirectory.path, systemList, nodeList, executable.path, argv, environ, logFD)
        guard pid > 0 else { throw StoreError.systemCall("fork", path: executable.path, errno: errno) }
        return try Spawn.wait(pid, path: executable.path)
    }

    /// Whether `runInMountView` can work here: root with CAP_SYS_ADMIN, tried once in a child
    /// that makes a namespace and mounts a tmpfs (a container without the capability cannot).
    public static var mountViewPossible: Bool { geteuid() == 0 && clade_probe_mount_view() == 1 }
}
