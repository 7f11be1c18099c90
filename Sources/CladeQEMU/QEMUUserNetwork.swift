#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import CladeVMM
import Foundation

/// The user-mode network helper (slirp4netns) of a machine in an unprivileged jail. QEMU's own
/// user-mode network runs inside the jail's network namespace, where the guest's gateway reaches
/// only that namespace's empty loopback; the helper gives the namespace a route out (with the
/// host's loopback cut off, `--disable-host-loopback`) and carries forwarded ports, the agent's
/// among them, from the host's loopback in. It ends when the VMM does: it watches a pipe whose
/// write end only the VMM holds.
enum QEMUUserNetwork {
    /// The helper's own network inside the namespace (the namespace's filter refuses it).
    static let namespaceNetwork = NamespaceFirewall.helperNetwork

    /// Starts the helper on the network namespace of `pid`.
    static func start(helper: URL, pid: Int32, files: QEMURuntimeFiles, exitDescriptor: Int32) throws {
        try? FileSystem.remove(files.networkHelperSocket)
        var jail = DetachedLauncher.Jail()
        jail.keptDescriptor = exitDescriptor
        _ = try DetachedLauncher.start(helper, arguments: [
            "--configure", "--mtu=65520", "--disable-host-loopback", "--cidr=\(namespaceNetwork)", "--enable-seccomp",
            "--exit-fd=4", "--api-socket", files.networkHelperSocket.path, String(pid), "tap0",
        ], log: files.networkHelperLog, jail: jail)
    }

    /// Forwards the host's `127.0.0.1:hostPort` to `guestPort` in the namespace (where QEMU
    /// forwards it on to the guest). A port the host already uses is ``VMMError/agentPortTaken(port:)``.
    static func forward(host hostPort: Int, guest guestPort: Int, socket: URL, timeout: Double = 10) async throws {
        let request = #"{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": \#(hostPort), "guest_port": \#(guestPort)}}"#
        let reply = try await onOwnThread { try exchange(Data(request.utf8), socket: socket, timeout: timeout) }
        let object = try? JSONSerialization.jsonObject(with: reply) as? [String: Any]
        guard object?["return"] == nil else { return }
        let message = (object?["error"] as? [String: Any])?["desc"] as? String ?? String(decoding: reply, as: UTF8.self)
        if message.contains("add_hostfwd") { throw VMMError.agentPortTaken(port: hostPort) }
        throw VMMError.controlFailed(backend: "qemu", operation: "forward host port \(hostPort) through slirp4netns", reason: message)
    }

    /// Sends `request` on a new connection to the helper's API socket and reads the reply to the
    /// end; the socket appears once the helper has set up the namespace, so connecting is retried
    /// until `timeout`.
    private static func exchange(_ request: Data, socket: URL, timeout: Double) throws -> Data {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let fd: Int32
            do {
                fd = try UnixStreamSocket.connect(to: socket, receiveTimeout: timeout)
            } catch let failure as UnixStreamSocket.ConnectFailure {
                guard failure.errno == ENOENT || failure.errno == ECONNREFUSED, Date() < deadline else {
                    throw VMMError.controlFailed(backend: "qemu", operation: "reach slirp4netns at \(socket.path)", reason: String(cString: strerror(failure.errno)))
                }
                usleep(5_000)
                continue
            }
            defer { close(fd) }
            let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent == request.count else { throw StoreError.systemCall("send", path: socket.path, errno: errno) }
            shutdown(fd, Int32(SHUT_WR))
            var reply = Data()
            var chunk = [UInt8](repeating: 0, count: 4096)
            while reply.count < 1 << 16 {
                let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { break }
                reply.append(contentsOf: chunk[..<count])
            }
            return reply
        }
    }
}
