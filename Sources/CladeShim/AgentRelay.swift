#if canImport(Glibc)
import Glibc
#endif
import CLinuxShims
import CladeStore
import CladeVMM
import Foundation
import Logging

/// Carries connections from a port on the host's loopback to the guest agent of a pod whose VM
/// is on the pod's network (``PodNetwork``): the agent is reachable only inside that namespace,
/// on the private link, so each accepted connection is joined to a socket made in the namespace.
/// Plain threads, as the agent's own side has: a connection is a few short requests, and every
/// call here blocks.
final class AgentRelay: @unchecked Sendable {
    /// The loopback port the engine's agent client connects to.
    let port: Int
    private let listener: Int32
    private let namespace: Int32
    private let logger: Logger
    private let stopped = Locked(false)

    /// Listens on a free loopback port for the namespace at `namespacePath`.
    init(namespacePath: String, logger: Logger) throws {
        self.logger = logger
        namespace = open(namespacePath, O_RDONLY | O_CLOEXEC)
        guard namespace >= 0 else {
            throw TTRPCError.status(.failedPrecondition, "cannot open the pod's network namespace \(namespacePath): \(String(cString: strerror(errno)))")
        }
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = Self.address("127.0.0.1", port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = descriptor >= 0 && withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, length) == 0 && listen(descriptor, 64) == 0 && getsockname(descriptor, $0, &length) == 0
            }
        }
        listener = descriptor
        guard bound else {
            let reason = String(cString: strerror(errno))
            if descriptor >= 0 { close(descriptor) }
            close(namespace)
            throw TTRPCError.status(.internalError, "cannot listen on the host's loopback for the pod's agent relay: \(reason)")
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread { [self] in acceptLoop() }
        thread.name = "agent-relay"
        thread.start()
    }

    /// Stops accepting; connections already joined end with their peers.
    func stop() {
        let already = stopped.withLock { value -> Bool in
            defer { value = true }
            return value
        }
        guard !already else { return }
        shutdown(listener, Int32(SHUT_RDWR))
    }

    private func acceptLoop() {
        while true {
            let client = clade_accept_cloexec(listener)
            if client < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                break
            }
            if stopped.withLock({ $0 }) {
                close(client)
                break
            }
            let thread = Thread { [self] in join(client) }
            thread.name = "agent-relay-connection"
            thread.start()
        }
        close(listener)
        close(namespace)
    }

    private func join(_ client: Int32) {
        let guest = clade_netns_stream_socket(namespace)
        guard guest >= 0 else {
            logger.warning("cannot make a socket in the pod's network namespace", metadata: ["error": "\(String(cString: strerror(errno)))"])
            close(client)
            return
        }
        var address = Self.address(PodNetwork.guestLinkAddress, port: UInt16(MachineSpec.guestAgentPort))
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(guest, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else {
            // The client sees its connection closed, as it would a guest agent not yet up.
            close(guest)
            close(client)
            return
        }
        let fromClient = DispatchSemaphore(value: 0), fromGuest = DispatchSemaphore(value: 0)
        for (source, destination, done) in [(client, guest, fromClient), (guest, client, fromGuest)] {
            let thread = Thread {
                Self.pump(from: source, to: destination)
                done.signal()
            }
            thread.name = "agent-relay-pump"
            thread.start()
        }
        // The engine's client closes when it is done; a guest that died never answers the end,
        // so its half is cut once the client has been gone for a while.
        fromClient.wait()
        if fromGuest.wait(timeout: .now() + Self.guestDrainSeconds) == .timedOut {
            shutdown(guest, Int32(SHUT_RDWR))
            fromGuest.wait()
        }
        close(guest)
        close(client)
    }

    static let guestDrainSeconds = 30.0

    /// Copies until `source` ends, then ends the writing half of `destination`. `MSG_NOSIGNAL`:
    /// a peer that went away must end this copy, not the shim (SIGPIPE).
    private static func pump(from source: Int32, to destination: Int32) {
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        copying: while true {
            let count = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            var offset = 0
            while offset < count {
                let written = buffer.withUnsafeBytes { bytes in
                    bytes.baseAddress.map { send(destination, $0 + offset, count - offset, Int32(MSG_NOSIGNAL)) } ?? -1
                }
                if written < 0, errno == EINTR { continue }
                guard written > 0 else { break copying }
                offset += written
            }
        }
        shutdown(destination, Int32(SHUT_WR))
    }

    private static func address(_ text: String, port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        inet_pton(AF_INET, text, &address.sin_addr)
        return address
    }
}
