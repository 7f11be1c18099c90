#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CladeGuestProtocol

/// One host connection (a TCP socket, or the virtio-serial port): the lines written to it from
/// several threads (replies, streamed events) never interleave, and the things tied to it
/// (subscriptions, processes that die with it, watches) learn when it closes.
final class Connection: @unchecked Sendable {
    private struct State {
        var closed = false
        var onClose: [@Sendable () -> Void] = []
    }

    let fd: Int32
    /// False for the virtio-serial port, which outlives each host connection on it.
    private let ownsDescriptor: Bool
    private let writeLock = Guarded(())
    private let state = Guarded(State())

    init(fd: Int32, ownsDescriptor: Bool = true) {
        self.fd = fd
        self.ownsDescriptor = ownsDescriptor
    }

    /// Sends one response line. Blocks while the host is not reading, which is the flow control:
    /// a stream's writer stops reading its process's output until the host catches up, so a slow
    /// reader costs the agent no memory and holds up only its own stream. False once the peer is gone.
    @discardableResult
    func send(_ response: AgentResponse) -> Bool {
        send(line: encodeResponse(response))
    }

    /// Sends an already encoded line (newline included).
    @discardableResult
    func send(line bytes: [UInt8]) -> Bool {
        // Checked under the write lock, which `close` also takes: a descriptor number is never
        // written after it was closed (and perhaps reused by another connection).
        let written = writeLock.withLock { _ in !isClosed && writeAll(fd, bytes) }
        if !written { markClosed() }
        return written
    }

    /// Runs `body`, then sends `response` unless `body` returned false, with this connection's
    /// writes held from before `body` until the response is written: a line another thread sends
    /// because of what `body` did (output for a watcher it added) goes out after `response`.
    func send(_ response: AgentResponse, after body: () -> Bool) {
        let line = encodeResponse(response)
        let failed = writeLock.withLock { _ -> Bool in
            guard body() else { return false }
            return isClosed || !writeAll(fd, line)
        }
        if failed { markClosed() }
    }

    /// Ends the connection: everything tied to it hears, then the descriptor is closed (if it is
    /// the connection's own). A write in progress finishes first; none starts after.
    func close() {
        markClosed()
        writeLock.withLock { _ in if ownsDescriptor { _ = Glibc.close(fd) } }
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    /// Runs `body` once the connection closes (at once if it already has).
    func whenClosed(_ body: @escaping @Sendable () -> Void) {
        let runNow = state.withLock { state -> Bool in
            if state.closed { return true }
            state.onClose.append(body)
            return false
        }
        if runNow { body() }
    }

    /// Called by the reader at end of file, or by a writer that hit an error.
    func markClosed() {
        let callbacks = state.withLock { state -> [@Sendable () -> Void] in
            if state.closed { return [] }
            state.closed = true
            defer { state.onClose = [] }
            return state.onClose
        }
        for callback in callbacks { callback() }
    }
}
