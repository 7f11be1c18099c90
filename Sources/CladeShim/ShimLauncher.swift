#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import CLinuxShims
import Foundation

/// The `start` action: find or start the pod's shim server and print its address.
public enum ShimLauncher {
    /// Where containerd's own shims put their sockets; containerd dials what `start` prints.
    static let socketDirectory = "/run/containerd/s"

    /// The socket of the shim serving `group` (the pod's sandbox id, else the container id),
    /// derived as containerd derives its shims': one per containerd address, namespace and group.
    public static func socketPath(address: String, namespace: String, group: String) -> String {
        "\(socketDirectory)/" + Digest.of(Data("\(address)/\(namespace)/\(group)".utf8)).hex
    }

    /// The pod a container belongs to: the CRI's sandbox id, else the container on its own.
    static func group(of spec: RuntimeSpec?, id: String) -> String {
        spec?.annotations?[Annotations.sandboxID].flatMap { $0.isEmpty ? nil : $0 } ?? id
    }

    /// Runs `start` in `bundle`: prints `unix://PATH` of a running shim for the pod, starting
    /// one (this executable with `serve`, holding the listening socket as fd 3) if none answers.
    public static func start(_ arguments: ShimArguments, bundle: String, executable: String) throws -> String {
        let spec = try RuntimeSpec.load(bundle: bundle)
        let path = socketPath(address: arguments.address, namespace: arguments.namespace, group: group(of: spec, id: arguments.id))
        let address = "unix://" + path
        if canConnect(path) {
            try? Data(address.utf8).write(to: URL(fileURLWithPath: bundle).appendingPathComponent("address"))
            return address
        }
        try FileManager.default.createDirectory(atPath: socketDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o711])
        unlink(path)
        let listener = try listen(at: path)
        defer { close(listener) }
        let log = open(URL(fileURLWithPath: bundle).appendingPathComponent("clade-shim.log").path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        defer { if log >= 0 { close(log) } }
        var serveArguments = arguments
        serveArguments.bundle = bundle
        try spawnServer(executable: executable, arguments: serveArguments.flags + ["serve"], listener: listener, log: log, directory: bundle)
        try? Data(address.utf8).write(to: URL(fileURLWithPath: bundle).appendingPathComponent("address"))
        return address
    }

    static func canConnect(_ path: String) -> Bool {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        return withAddress(path) { connect(descriptor, $0, $1) == 0 }
    }

    static func listen(at path: String) throws -> CInt {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw StoreError.systemCall("socket", path: path, errno: errno) }
        guard withAddress(path, { bind(descriptor, $0, $1) == 0 }), Glibc.listen(descriptor, 64) == 0 else {
            let failure = errno
            close(descriptor)
            throw StoreError.systemCall("bind", path: path, errno: failure)
        }
        chmod(path, 0o600)
        return descriptor
    }

    private static func withAddress(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Bool) -> Bool {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    /// Starts the server in a session of its own, detached from containerd's pipes (containerd
    /// reads `start`'s output until every writer has closed it).
    private static func spawnServer(executable: String, arguments: [String], listener: CInt, log: CInt, directory: String) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        if log >= 0 {
            posix_spawn_file_actions_adddup2(&actions, log, 1)
            posix_spawn_file_actions_adddup2(&actions, log, 2)
        } else {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, listener, 3)
        _ = clade_spawn_addchdir(&actions, directory)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, clade_spawn_setsid_flag())
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard result == 0 else { throw StoreError.systemCall("posix_spawn", path: executable, errno: result) }
    }
}
