#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxShims
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CladeGuestProtocol

/// A process started with `start`: its streams, who is watching its output, and how it ended.
///
/// The table lives in the agent's memory, so a snapshot taken while processes run carries them
/// and the table into every fork: a fork attaches to them by pid or tag like the original would.
final class ManagedProcess: @unchecked Sendable {
    struct Subscriber {
        let connection: Connection
        let requestID: String?
    }

    private struct State {
        var subscribers: [ObjectIdentifier: Subscriber] = [:]
        var exitCode: Int32?
        var signal: Int32?
        var timedOut = false
        var inputOpen = true
    }

    let launched: LaunchedProcess
    let tag: String?
    let args: [String]
    let cwd: String?
    let user: String?
    let startedAt: Double
    private let state = Guarded(State())
    private let inputLock = Guarded(())

    var pid: pid_t { launched.pid }

    init(launched: LaunchedProcess, tag: String?, args: [String], cwd: String?, user: String?) {
        self.launched = launched
        self.tag = tag
        self.args = args
        self.cwd = cwd
        self.user = user
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        startedAt = Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    var isRunning: Bool { state.withLock { $0.exitCode == nil } }

    var row: GuestProcess {
        state.withLock { state in
            GuestProcess(
                pid: pid, tag: tag, args: args, cwd: cwd, user: user, pty: launched.terminalFD != nil, startedAt: startedAt,
                running: state.exitCode == nil, exitCode: state.exitCode, signal: state.signal)
        }
    }

    /// Adds a watcher of further output; if the process has already ended, sends its exit at once.
    ///
    /// `announce`, when given, is sent to the watcher in the same step as it is added: the
    /// connection's writes are held from before the watcher joins until the announcement is
    /// written, so it goes out before any output, and no output made after it is missed. (The
    /// process's own lock is never held while writing: a failed write runs the connection's
    /// close callbacks, which may take it.)
    func subscribe(_ connection: Connection, requestID: String?, announce: AgentResponse? = nil) {
        let key = ObjectIdentifier(connection)
        var ended: AgentResponse?
        let join = {
            ended = self.state.withLock { state in
                if state.exitCode != nil { return self.exitEvent(state) }
                state.subscribers[key] = Subscriber(connection: connection, requestID: requestID)
                return nil
            }
        }
        if let announce {
            connection.send(announce, after: {
                join()
                guard ended == nil else { return false }
                TestHooks.pauseAfterAnnouncingAttach()
                return true
            })
        } else {
            join()
        }
        if var ended {
            ended.id = requestID
            connection.send(ended)
            return
        }
        connection.whenClosed { [weak self] in self?.unsubscribe(key) }
    }

    private func unsubscribe(_ key: ObjectIdentifier) {
        state.withLock { _ = $0.subscribers.removeValue(forKey: key) }
    }

    /// Sends `event` to every watcher; a watcher whose connection fails is dropped. The writes
    /// block while a watcher's host is slow, which stops this process's pump (and only it).
    func publish(_ event: AgentResponse) {
        let subscribers = state.withLock { Array($0.subscribers.values) }
        for subscriber in subscribers {
            var line = event
            line.id = subscriber.requestID
            subscriber.connection.send(line)
        }
    }

    /// `publish` for output chunks, the hot path: the line is put together by hand (same JSON,
    /// keys sorted), since a general encoder costs more than the copy under emulation.
    func publishOutput(_ bytes: ArraySlice<UInt8>, isError: Bool) {
        let subscribers = state.withLock { Array($0.subscribers.values) }
        if subscribers.isEmpty { return }
        let data = Data(bytes).base64EncodedString()
        let kind = isError ? "stderr" : "stdout"
        for subscriber in subscribers {
            var line = "{\"data\":\"\(data)\",\"event\":\"\(kind)\","
            if let id = subscriber.requestID { line += "\"id\":\(jsonString(id)),"}
            line += "\"pid\":\(pid)}\n"
            subscriber.connection.send(line: Array(line.utf8))
        }
    }

    func writeInput(_ bytes: [UInt8]) throws {
        try inputLock.withLock { _ in
            guard state.withLock({ $0.inputOpen && $0.exitCode == nil }) else {
                throw CommandError(description: "process \(pid)'s standard input is closed")
            }
            guard writeAll(launched.inputFD, bytes) else {
                throw CommandError(description: "cannot write to process \(pid)'s standard input: \(String(cString: strerror(errno)))")
            }
        }
    }

    /// End of input: the pipe is closed; a terminal gets ^D, as a keyboard would send.
    func closeInput() throws {
        if launched.terminalFD != nil { return try writeInput([0x04]) }
        inputLock.withLock { _ in
            let wasOpen = state.withLock { state -> Bool in
                defer { state.inputOpen = false }
                return state.inputOpen
            }
            if wasOpen { close(launched.inputFD) }
        }
    }

    func resize(_ size: TerminalSize) throws {
        guard let terminal = launched.terminalFD else { throw CommandError(description: "process \(pid) has no terminal to resize") }
        guard clade_set_window_size(terminal, size.rows, size.cols) == 0 else {
            throw CommandError(description: "cannot resize process \(pid)'s terminal: \(String(cString: strerror(errno)))")
        }
    }

    func sendSignal(_ number: Int32) throws {
        guard isRunning else { throw CommandError(description: "process \(pid) has already exited", kind: "not_found") }
        // The process leads its own session and group: signal everything it started.
        if kill(-pid, number) != 0 && kill(pid, number) != 0 {
            throw CommandError(description: "cannot signal process \(pid): \(String(cString: strerror(errno)))")
        }
    }

    /// Records the end and tells every watcher.
    func finish(status: Int32, timedOut: Bool) {
        let event = state.withLock { state -> AgentResponse in
            state.timedOut = timedOut
            if timedOut {
                // As `exec` (and coreutils' timeout) report it.
                state.signal = SIGKILL
                state.exitCode = 124
            } else if status & 0x7f == 0 {
                state.exitCode = (status >> 8) & 0xff
            } else {
                state.signal = status & 0x7f
                state.exitCode = 128 + (status & 0x7f)
            }
            return exitEvent(state)
        }
        publish(event)
        inputLock.withLock { _ in
            state.withLock { state in
                if state.inputOpen && launched.terminalFD == nil { close(launched.inputFD) }
                state.inputOpen = false
                state.subscribers = [:]
            }
        }
        if let terminal = launched.terminalFD { close(terminal) }
    }

    private func exitEvent(_ state: State) -> AgentResponse {
        var event = AgentResponse()
        event.event = .exit
        event.pid = pid
        event.exitCode = state.exitCode
        event.signal = state.signal
        if state.timedOut { event.timedOut = true }
        return event
    }
}

/// `text` as a JSON string literal.
func jsonString(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        case _ where scalar.value < 0x20: result += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count) + String(scalar.value, radix: 16)
        default: result.unicodeScalars.append(scalar)
        }
    }
    return result + "\""
}

/// Every process started with `start`: the running ones and the last few that ended.
final class ProcessTable: @unchecked Sendable {
    static let keptEnded = 64
    private struct State {
        var running: [pid_t: ManagedProcess] = [:]
        var ended: [ManagedProcess] = []
        /// Tags claimed by a `start` whose process is not in `running` yet.
        var reservedTags: Set<String> = []
    }
    private let state = Guarded(State())

    /// Claims `tag` for a process about to start, in the same step as the check, so two
    /// concurrent starts with one tag cannot both pass it. Release it with `insert` or `release`.
    func reserve(tag: String) throws {
        try state.withLock { state in
            guard !state.reservedTags.contains(tag), !state.running.values.contains(where: { $0.tag == tag }) else {
                throw CommandError(description: "a running process is already tagged '\(tag)'; attach to it, or pick another tag")
            }
            state.reservedTags.insert(tag)
        }
    }

    /// Gives up a tag reserved for a start that failed.
    func release(tag: String) {
        state.withLock { _ = $0.reservedTags.remove(tag) }
    }

    /// Adds a started process, which takes over its tag's reservation.
    func insert(_ process: ManagedProcess) {
        state.withLock { state in
            state.running[process.pid] = process
            if let tag = process.tag { state.reservedTags.remove(tag) }
        }
    }

    func ended(_ process: ManagedProcess) {
        state.withLock { state in
            state.running.removeValue(forKey: process.pid)
            state.ended.append(process)
            if state.ended.count > Self.keptEnded { state.ended.removeFirst(state.ended.count - Self.keptEnded) }
        }
    }

    /// Drops the process `pid` from the table once it has ended (within `seconds`), so that it is
    /// not listed: for the agent's own warm-up command, which users never started.
    func forgetOnceEnded(pid: pid_t, within seconds: Double) {
        _ = state.wait(until: { $0.running[pid] == nil ? () : nil }, atMost: seconds)
        state.withLock { $0.ended.removeAll { $0.pid == pid } }
    }

    /// By pid, else by tag: a running process first, then the latest that ended.
    func find(pid: Int32?, tag: String?) throws -> ManagedProcess {
        let found = state.withLock { state -> ManagedProcess? in
            if let pid {
                return state.running[pid] ?? state.ended.last { $0.pid == pid }
            }
            guard let tag else { return nil }
            return state.running.values.first { $0.tag == tag } ?? state.ended.last { $0.tag == tag }
        }
        guard let found else {
            if pid == nil && tag == nil { throw CommandError(description: "name the process with 'pid' or 'tag'") }
            throw CommandError(
                description: "no process \(pid.map { "with pid \($0)" } ?? "tagged '\(tag ?? "")'") in this guest's table; list them with the 'processes' action",
                kind: "not_found")
        }
        return found
    }

    var rows: [GuestProcess] {
        let processes = state.withLock { $0.ended + $0.running.values.sorted { $0.pid < $1.pid } }
        return processes.map(\.row)
    }
}
