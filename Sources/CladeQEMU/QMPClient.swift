import CladeStore
import CladeVMM
import Foundation
import Logging
import NIOCore

/// An error QEMU returned for a QMP command, carrying QMP's own message.
public struct QMPError: Error, CustomStringConvertible, Sendable {
    public let command: String
    public let errorClass: String
    public let message: String
    public var description: String { "QEMU refused \(command): \(message) (\(errorClass))" }
}

/// A typed async client for QEMU's QMP socket.
///
/// Use ``withConnection(socket:timeout:logger:_:)``: it connects, negotiates capabilities,
/// runs the body and closes. Commands may be issued concurrently; replies are matched by id.
public actor QMPClient {
    private let writer: NIOAsyncChannelOutboundWriter<ByteBuffer>
    private let logger: Logger
    private var nextID = 0
    private var pending: [String: CheckedContinuation<JSONValue, Error>] = [:]
    private var pendingCommands: [String: String] = [:]
    private var events: [(name: String, data: JSONValue)] = []
    private var eventWaiters: [(name: String, continuation: CheckedContinuation<JSONValue, Error>)] = []
    private var closedError: Error?
    public private(set) var qemuVersion = ""

    init(writer: NIOAsyncChannelOutboundWriter<ByteBuffer>, logger: Logger) {
        self.writer = writer
        self.logger = logger
    }

    /// Connects to the QMP socket at `socket`, negotiates, and runs `body`.
    public static func withConnection<R: Sendable>(
        socket: URL, timeout: Double = 10, logger: Logger = Logger(label: "clade.qmp"),
        _ body: @escaping @Sendable (QMPClient) async throws -> R
    ) async throws -> R {
        try await withLineConnection(to: .unix(socket.path)) { inbound, outbound in
            let client = QMPClient(writer: outbound, logger: logger)
            return try await withThrowingTaskGroup(of: R?.self) { group in
                group.addTask {
                    do {
                        for try await line in inbound {
                            await client.receive(line)
                        }
                        await client.close(with: ChannelError.closed("QEMU's QMP socket \(socket.path)"))
                    } catch {
                        await client.close(with: error)
                    }
                    return nil
                }
                group.addTask {
                    try await client.negotiate(timeout: timeout)
                    return try await body(client)
                }
                defer { group.cancelAll() }
                while let next = try await group.next() {
                    if let result = next { return result }
                }
                throw ChannelError.closed("QEMU's QMP socket \(socket.path)")
            }
        }
    }

    private var greeting: CheckedContinuation<String, Error>?
    private var greetingVersion: String?

    private func negotiate(timeout: Double) async throws {
        let version = try await withTimeout(timeout, what: "QMP greeting") { try await self.awaitGreeting() }
        qemuVersion = version
        _ = try await execute("qmp_capabilities", timeout: timeout)
    }

    private func awaitGreeting() async throws -> String {
        if let greetingVersion { return greetingVersion }
        if let closedError { throw closedError }
        return try await withCheckedThrowingContinuation { greeting = $0 }
    }

    /// Runs a QMP command and returns its `return` value; QEMU's errors become ``QMPError``.
    @discardableResult
    public func execute(_ command: String, arguments: [String: JSONValue]? = nil, timeout: Double = 30) async throws -> JSONValue {
        if let closedError { throw closedError }
        nextID += 1
        let id = "clade-\(nextID)"
        let line = try QMPCodec.encodeCommand(command, arguments: arguments, id: id)
        logger.trace("qmp send", metadata: ["command": "\(command)"])
        let timeoutTask = Task { [weak self] in
            try await Task.sleep(nanoseconds: UInt64(timeout * 1e9))
            await self?.fail(id: id, with: ChannelError.timedOut(what: "QMP command \(command)", seconds: timeout))
        }
        defer { timeoutTask.cancel() }
        return try await withCheckedThrowingContinuation { continuation in
            pending[id] = continuation
            pendingCommands[id] = command
            Task {
                do {
                    try await writer.write(ByteBuffer(bytes: line))
                } catch {
                    self.fail(id: id, with: error)
                }
            }
        }
    }

    /// Waits for the next event called `name` (one that already arrived counts).
    public func waitForEvent(_ name: String, timeout: Double) async throws -> JSONValue {
        if let index = events.firstIndex(where: { $0.name == name }) {
            return events.remove(at: index).data
        }
        if let closedError { throw closedError }
        let timeoutTask = Task { [weak self] in
            try await Task.sleep(nanoseconds: UInt64(timeout * 1e9))
            await self?.failEventWaiters(name, with: ChannelError.timedOut(what: "QMP event \(name)", seconds: timeout))
        }
        defer { timeoutTask.cancel() }
        return try await withCheckedThrowingContinuation { eventWaiters.append((name, $0)) }
    }

    private func receive(_ buffer: ByteBuffer) {
        let message: QMPMessage
        do {
            message = try QMPCodec.decode(Data(buffer.readableBytesView))
        } catch {
            logger.warning("ignoring QMP line", metadata: ["error": "\(error)"])
            return
        }
        switch message {
        case .greeting(let version):
            greetingVersion = version
            greeting?.resume(returning: version)
            greeting = nil
        case .success(let id, let value):
            if let id, let continuation = pending.removeValue(forKey: id) {
                pendingCommands.removeValue(forKey: id)
                continuation.resume(returning: value)
            }
        case .failure(let id, let errorClass, let description):
            if let id, let continuation = pending.removeValue(forKey: id) {
                let command = pendingCommands.removeValue(forKey: id) ?? id
                continuation.resume(throwing: QMPError(command: command, errorClass: errorClass, message: description))
            }
        case .event(let name, let data, _):
            logger.debug("qmp event", metadata: ["event": "\(name)"])
            if let index = eventWaiters.firstIndex(where: { $0.name == name }) {
                eventWaiters.remove(at: index).continuation.resume(returning: data)
            } else {
                events.append((name, data))
                if events.count > 256 { events.removeFirst(events.count - 256) }
            }
        }
    }

    private func fail(id: String, with error: Error) {
        pendingCommands.removeValue(forKey: id)
        pending.removeValue(forKey: id)?.resume(throwing: error)
    }

    private func failEventWaiters(_ name: String, with error: Error) {
        let matching = eventWaiters.filter { $0.name == name }
        eventWaiters.removeAll { $0.name == name }
        matching.forEach { $0.continuation.resume(throwing: error) }
    }

    private func close(with error: Error) {
        closedError = error
        greeting?.resume(throwing: error)
        greeting = nil
        let waiting = pending
        pending = [:]
        waiting.values.forEach { $0.resume(throwing: error) }
        let waiters = eventWaiters
        eventWaiters = []
        waiters.forEach { $0.continuation.resume(throwing: error) }
    }
}

extension QMPError: CategorizedError {
    public var category: ErrorCategory { .guestFailure }
}
