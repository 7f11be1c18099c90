#if canImport(Glibc)
import Glibc
#endif
import CLinuxShims
import Foundation

/// Starts long-lived programs (a VMM) that must outlive the clade process that starts them
/// without daemonizing themselves: a VMM whose seccomp filter forbids spawning cannot fork to
/// daemonize.
///
/// Foundation's `Process` cannot be used for these: it keeps the child as its own and watches
/// descriptors the program would inherit. Here a forked child starts a session and forks the
/// program, so the program is nobody's child (init reaps it), gets /dev/null for stdin, a log
/// file for stdout and stderr, and no other descriptor of ours.
public enum DetachedLauncher {
    /// What a program started in a mount view of its own sees: a tmpfs at `root` holding
    /// `systemDirectories` read-only, the `devices` that exist, and `machineDirectory` at its own
    /// path (see `clade_spawn_vmm`).
    public struct MountView: Sendable {
        public var root: URL
        public var machineDirectory: URL
        public var systemDirectories: [String]
        public var devices: [String]

        public init(root: URL, machineDirectory: URL, systemDirectories: [String], devices: [String]) {
            self.root = root
            self.machineDirectory = machineDirectory
            self.systemDirectories = systemDirectories
            self.devices = devices
        }
    }

    /// Starts `executable` detached, in `mountView` when given, and returns its pid once it runs
    /// (one fork and exec, no helper programs). A step that fails before the program runs is
    /// thrown, and written to `log` too.
    public static func start(_ executable: URL, arguments: [String], log: URL, mountView: MountView? = nil) throws -> pid_t {
        let logFD = open(log.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard logFD >= 0 else { throw StoreError.systemCall("open", path: log.path, errno: errno) }
        defer { close(logFD) }
        func cStrings(_ strings: [String]) -> [UnsafeMutablePointer<CChar>?] { strings.map { strdup($0) } + [nil] }
        let argv = cStrings([executable.path] + arguments)
        let system = cStrings(mountView?.systemDirectories ?? [])
        let nodes = cStrings(mountView?.devices ?? [])
        defer { (argv + system + nodes).forEach { free($0) } }
        let systemList = system.map { $0.map { UnsafePointer($0) } }
        let nodeList = nodes.map { $0.map { UnsafePointer($0) } }
        let pid: pid_t
        if let mountView {
            pid = clade_spawn_vmm(mountView.root.path, mountView.machineDirectory.path, systemList, nodeList, executable.path, argv, environ, logFD)
        } else {
            pid = clade_spawn_vmm(nil, nil, systemList, nodeList, executable.path, argv, environ, logFD)
        }
        guard pid > 0 else { throw StoreError.systemCall("start", path: executable.path, errno: errno) }
        return pid
    }

    /// Whether a mount view can be made here: root with CAP_SYS_ADMIN, tried once in a child
    /// that makes a namespace and mounts a tmpfs (a container without the capability cannot).
    public static var mountViewPossible: Bool { geteuid() == 0 && clade_probe_mount_view() == 1 }
}
