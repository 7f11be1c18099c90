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
    /// The jail a program starts in (see `clade_spawn_vmm`).
    public struct Jail: Sendable {
        /// A mount view: a tmpfs at `root` holding `systemDirectories` read-only, the `devices`
        /// that exist, `readOnlyFiles` at their own paths, and `machineDirectory` at its own path.
        public var root: URL?
        public var machineDirectory: URL?
        public var systemDirectories: [String] = []
        public var devices: [String] = []
        public var readOnlyFiles: [URL] = []
        /// Pivot into the view before the program starts (else it chroots there itself).
        public var pivot = false
        /// A user namespace (this user as root inside) and a network namespace of its own.
        public var userNamespace = false
        /// A descriptor the program keeps open as its descriptor 4.
        public var keptDescriptor: Int32 = -1

        public init() {}
    }

    /// Starts `executable` detached, in `jail` when given, and returns its pid once it runs
    /// (one fork and exec, no helper programs). A step that fails before the program runs is
    /// thrown, and written to `log` too.
    public static func start(_ executable: URL, arguments: [String], log: URL, jail: Jail? = nil) throws -> pid_t {
        let logFD = open(log.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard logFD >= 0 else { throw StoreError.systemCall("open", path: log.path, errno: errno) }
        defer { close(logFD) }
        func cStrings(_ strings: [String]) -> [UnsafeMutablePointer<CChar>?] { strings.map { strdup($0) } + [nil] }
        let argv = cStrings([executable.path] + arguments)
        let system = cStrings(jail?.systemDirectories ?? [])
        let nodes = cStrings(jail?.devices ?? [])
        let files = cStrings((jail?.readOnlyFiles ?? []).map(\.path))
        let root = jail?.root.map { strdup($0.path) } ?? nil
        let machine = jail?.machineDirectory.map { strdup($0.standardizedFileURL.path) } ?? nil
        defer { (argv + system + nodes + files + [root, machine]).forEach { free($0) } }
        let systemList = system.map { $0.map { UnsafePointer($0) } }
        let nodeList = nodes.map { $0.map { UnsafePointer($0) } }
        let fileList = files.map { $0.map { UnsafePointer($0) } }
        let pid: pid_t = systemList.withUnsafeBufferPointer { systemPointer in
            nodeList.withUnsafeBufferPointer { nodePointer in
                fileList.withUnsafeBufferPointer { filePointer in
                    guard let jail else { return clade_spawn_vmm(nil, executable.path, argv, environ, logFD) }
                    var description = clade_vmm_jail(
                        root: root.map { UnsafePointer($0) }, machine: machine.map { UnsafePointer($0) },
                        system_dirs: systemPointer.baseAddress, devices: nodePointer.baseAddress, read_only_files: filePointer.baseAddress,
                        pivot: jail.pivot ? 1 : 0, user_namespace: jail.userNamespace ? 1 : 0, keep_fd: jail.keptDescriptor)
                    return clade_spawn_vmm(&description, executable.path, argv, environ, logFD)
                }
            }
        }
        guard pid > 0 else { throw StoreError.systemCall("start", path: executable.path, errno: errno) }
        return pid
    }

    /// Whether a mount view can be made here: root with CAP_SYS_ADMIN, tried once in a child
    /// that makes a namespace and mounts a tmpfs (a container without the capability cannot).
    public static var mountViewPossible: Bool { geteuid() == 0 && clade_probe_mount_view() == 1 }

    /// Whether an unprivileged jail can be made here: a user namespace with a network namespace
    /// and a mount view in it (some hosts forbid unprivileged user namespaces).
    public static var userNamespacePossible: Bool { clade_probe_user_namespace() == 1 }
}
