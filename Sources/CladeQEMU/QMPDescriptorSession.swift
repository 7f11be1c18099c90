#if canImport(Glibc)
import Glibc
#endif
import CLinuxShims
import CladeStore
import CladeVMM
import Foundation

/// A blocking QMP connection that can hand QEMU an open file (`getfd` with the descriptor
/// attached). QEMU names such a descriptor per monitor connection, so the commands that use it
/// (`migrate fd:NAME`, `migrate-incoming fd:NAME`) go over this same connection. This is how a
/// QEMU whose seccomp filter forbids spawning still writes and reads state files: clade opens
/// them, QEMU only gets the descriptor.
final class QMPDescriptorSession {
    private let socketFD: Int32
    private let path: String
    private let timeout: Double
    private var pendingBytes: [UInt8] = []
    private var nextID = 0
    /// When QEMU last sent each event, by its own clock (seconds since the epoch).
    private(set) var eventTimes: [String: Double] = [:]

    /// Connects to the QMP socket at `socket`, reads the greeting and negotiates capabilities;
    /// each read waits at most `timeout` seconds.
    init(socket: URL, timeout: Double) throws {
        path = socket.path
        self.timeout = timeout
        do {
            socketFD = try UnixStreamSocket.connect(to: socket, receiveTimeout: timeout)
        } catch let failure as UnixStreamSocket.ConnectFailure {
            throw StoreError.systemCall("connect", path: socket.path, errno: failure.errno)
        }
        // A throw from here on releases the session, and its deinit closes the socket.
        guard case .greeting = try QMPCodec.decode(try readLine()) else {
            throw ChannelError.malformed("QEMU's monitor at \(socket.path) did not greet")
        }
        _ = try execute("qmp_capabilities")
    }

    deinit { close(socketFD) }

    /// Runs `body` on a new session to `socket` on a thread of its own (it blocks), so the
    /// caller's task does not hold a thread of the concurrency pool while QEMU works.
    static func run<R: Sendable>(socket: URL, timeout: Double = 30, _ body: @escaping @Sendable (QMPDescriptorSession) throws -> R) async throws -> R {
        try await onOwnThread { try body(try QMPDescriptorSession(socket: socket, timeout: timeout)) }
    }

    /// Runs `command` and returns its `return` value, skipping events; QEMU's errors become ``QMPError``.
    @discardableResult
    func execute(_ command: String, arguments: [String: JSONValue]? = nil, attaching descriptor: Int32? = nil) throws -> JSONValue {
        nextID += 1
        let id = "clade-fd-\(nextID)"
        let line = [UInt8](try QMPCodec.encodeCommand(command, arguments: arguments, id: id))
        var offset = 0
        if let descriptor {
            let sent = line.withUnsafeBytes { clade_send_with_descriptor(socketFD, $0.baseAddress, $0.count, descriptor) }
            guard sent > 0 else { throw StoreError.systemCall("sendmsg", path: path, errno: errno) }
            offset = Int(sent)
        }
        while offset < line.count {
            let sent = line[offset...].withUnsafeBytes { send(socketFD, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent < 0, errno == EINTR { continue }
            guard sent > 0 else { throw StoreError.systemCall("send", path: path, errno: errno) }
            offset += sent
        }
        while true {
            switch try QMPCodec.decode(try readLine()) {
            case .success(let replyID, let value) where replyID == id: return value
            case .failure(let replyID, let errorClass, let description) where replyID == id:
                throw QMPError(command: command, errorClass: errorClass, message: description)
            case .event(let name, _, let timestamp):
                if let timestamp { eventTimes[name] = timestamp }
            default: continue
            }
        }
    }

    /// Polls `query-migrate` until the migration reaches one of `states`; throws when it fails or
    /// is cancelled first (unless that is what was asked for) or takes longer than `timeout`.
    func waitForMigration(until states: Set<String> = ["completed"], timeout: Double = 120) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let info = try execute("query-migrate")
            let status = info["status"]?.stringValue ?? "none"
            if states.contains(status) { return }
            if status == "failed" || status == "cancelled" {
                throw VMMError.stateTransferFailed(backend: "qemu", reason: info["error-desc"]?.stringValue ?? "migration \(status)")
            }
            usleep(500)
        }
        throw VMMError.stateTransferFailed(backend: "qemu", reason: "migration did not reach \(states.sorted().joined(separator: " or ")) within \(Int(timeout)) s")
    }

    /// Waits until a migration that a dead clade process left running has finished: QEMU refuses
    /// new migration settings while one runs. A live copy's stream goes to a file, so QEMU
    /// finishes it alone; cancelling it instead can leave the guest stuck on a write-protected
    /// page and its RAM unable to be write-protected again. Callers hold the sandbox's lock, so a
    /// running migration is never a live operation's own.
    func waitForAbandonedMigration(timeout: Double = 600) throws {
        let settled: Set<String> = ["none", "completed", "failed", "cancelled"]
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let status = try execute("query-migrate")["status"]?.stringValue ?? "none"
            if settled.contains(status) { return }
            guard Date() < deadline else {
                throw VMMError.stateTransferFailed(
                    backend: "qemu", reason: "a copy of this sandbox's memory left by an interrupted clade is still \(status) after \(Int(timeout)) s; kill the sandbox or try again later")
            }
            usleep(2_000)
        }
    }

    /// One line from QEMU, without its newline; lines are bounded so a broken monitor cannot grow memory.
    private func readLine() throws -> [UInt8] {
        while true {
            if let newline = pendingBytes.firstIndex(of: 0x0A) {
                let line = Array(pendingBytes[..<newline])
                pendingBytes.removeSubrange(...newline)
                return line
            }
            guard pendingBytes.count < 1 << 20 else { throw ChannelError.malformed("QEMU's monitor sent a line over 1 MiB") }
            var chunk = [UInt8](repeating: 0, count: 16_384)
            let count = chunk.withUnsafeMutableBytes { recv(socketFD, $0.baseAddress, $0.count, 0) }
            if count < 0, errno == EINTR { continue }
            if count < 0, errno == EAGAIN || errno == EWOULDBLOCK {
                throw ChannelError.timedOut(what: "QEMU's monitor at \(path)", seconds: timeout)
            }
            guard count > 0 else { throw ChannelError.closed("QEMU's QMP socket \(path)") }
            pendingBytes += chunk[..<count]
        }
    }
}
