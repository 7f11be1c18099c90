#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CladeGuestProtocol

/// The v2 process actions: start, attach, stdin, close_stdin, signal, resize, processes.
struct ProcessService: Sendable {
    static let chunkBytes = 64 * 1024
    let reaper: ChildReaper
    let table: ProcessTable

    /// Starts the process and, unless detached, makes `connection` a watcher before any output
    /// can be produced, so the `started` line always comes first and no output is missed.
    func start(_ request: AgentRequest, on connection: Connection) throws -> AgentResponse? {
        var argv = request.args ?? []
        if let command = request.command { argv = ["/bin/sh", "-c", command] }
        if let timeout = request.timeout, !(timeout > 0) { throw CommandError(description: "timeout must be a positive number of seconds") }
        if let tag = request.tag {
            guard !tag.isEmpty, tag.utf8.count <= 128 else { throw CommandError(description: "a tag is 1 to 128 bytes") }
            try table.reserve(tag: tag)
        }
        let launched: LaunchedProcess
        do {
            launched = try ProcessLauncher(reaper: reaper).launch(
                argv: argv, environment: request.env ?? [:], cwd: request.cwd, user: request.user, terminal: request.pty, root: request.root, limits: request.rlimits ?? [])
        } catch {
            if let tag = request.tag { table.release(tag: tag) }
            throw error
        }
        let process = ManagedProcess(launched: launched, tag: request.tag, args: argv, cwd: request.cwd, user: request.user)
        table.insert(process)
        var started = AgentResponse(id: request.id)
        started.event = .started
        started.pid = process.pid
        let detached = request.detach == true
        if !detached {
            connection.send(started)
            process.subscribe(connection, requestID: request.id)
            if request.background != true && request.tag == nil {
                // Like a terminal hang-up: a foreground process does not outlive the host's interest in it.
                connection.whenClosed { [process] in if process.isRunning { try? process.sendSignal(SIGKILL) } }
            }
        }
        let deadline = request.timeout.map { monotonicSeconds() + $0 }
        startThread { [reaper, table] in
            pump(process, reaper: reaper, deadline: deadline)
            table.ended(process)
        }
        return detached ? started : nil
    }

    func attach(_ request: AgentRequest, on connection: Connection) throws -> AgentResponse? {
        let process = try table.find(pid: request.pid, tag: request.tag)
        var attached = AgentResponse(id: request.id)
        attached.event = .attached
        attached.pid = process.pid
        // One step: a process that has ended answers with its exit instead.
        process.subscribe(connection, requestID: request.id, announce: attached)
        return nil
    }

    func control(_ action: AgentAction, _ request: AgentRequest) throws -> AgentResponse {
        let process = try table.find(pid: request.pid, tag: request.tag)
        switch action {
        case .stdin:
            guard let data = Data(base64Encoded: request.data ?? "") else { throw CommandError(description: "data is not valid base64") }
            try process.writeInput([UInt8](data))
        case .closeStdin:
            try process.closeInput()
        case .signal:
            try process.sendSignal(try Self.signalNumber(request.signal ?? "TERM"))
        case .resize:
            guard let size = request.pty else { throw CommandError(description: "resize needs 'pty': {\"rows\", \"cols\"}") }
            try process.resize(size)
        default:
            throw CommandError(description: "\(action.rawValue) is not a process control action")
        }
        var response = AgentResponse()
        response.pid = process.pid
        return response
    }

    func list() -> AgentResponse {
        var response = AgentResponse()
        response.processes = table.rows
        return response
    }

    static let signalNames: [String: Int32] = [
        "HUP": SIGHUP, "INT": SIGINT, "QUIT": SIGQUIT, "KILL": SIGKILL, "TERM": SIGTERM, "USR1": SIGUSR1, "USR2": SIGUSR2,
        "STOP": SIGSTOP, "CONT": SIGCONT, "ALRM": SIGALRM, "WINCH": SIGWINCH, "PIPE": SIGPIPE,
    ]

    static func signalNumber(_ text: String) throws -> Int32 {
        if let number = Int32(text), number > 0, number < 65 { return number }
        var name = text.uppercased()
        if name.hasPrefix("SIG") { name.removeFirst(3) }
        guard let number = signalNames[name] else {
            throw CommandError(description: "unknown signal '\(text)'; use a number or one of \(signalNames.keys.sorted().joined(separator: ", "))")
        }
        return number
    }
}

/// Reads the process's output as it comes and hands each chunk to its watchers, until the process
/// has exited and its streams are drained (or, when something it left behind keeps them open,
/// a quarter second after the exit).
private func pump(_ process: ManagedProcess, reaper: ChildReaper, deadline: Double?) {
    var output = process.launched.outputFD
    var errors = process.launched.errorFD
    var buffer = [UInt8](repeating: 0, count: ProcessService.chunkBytes)
    var exitedAt: Double?
    var killed = false
    while output >= 0 || errors >= 0 {
        let now = monotonicSeconds()
        if let deadline, !killed, now >= deadline {
            kill(-process.pid, SIGKILL)
            kill(process.pid, SIGKILL)
            killed = true
        }
        if exitedAt == nil, reaper.exitStatusIfFinished(process.pid) != nil { exitedAt = now }
        if let exitedAt, now - exitedAt > 0.25 { break }
        var fds: [pollfd] = []
        if output >= 0 { fds.append(pollfd(fd: output, events: Int16(POLLIN), revents: 0)) }
        if errors >= 0 { fds.append(pollfd(fd: errors, events: Int16(POLLIN), revents: 0)) }
        if poll(&fds, nfds_t(fds.count), 100) <= 0 { continue }
        for entry in fds where entry.revents != 0 {
            let count = read(entry.fd, &buffer, buffer.count)
            if count < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            if count <= 0 {
                // EIO from a terminal's controller side means every holder of the terminal is gone.
                if entry.fd == output { output = -1 } else { errors = -1 }
                if entry.fd != process.launched.terminalFD { close(entry.fd) }
                continue
            }
            process.publishOutput(buffer[0..<count], isError: entry.fd == process.launched.errorFD)
        }
    }
    for fd in [output, errors] where fd >= 0 && fd != process.launched.terminalFD { close(fd) }
    // A process can close both its streams and keep running: its deadline still holds.
    var status: Int32?
    if let deadline, !killed {
        status = reaper.waitForExit(process.pid, atMost: deadline - monotonicSeconds())
        if status == nil {
            kill(-process.pid, SIGKILL)
            kill(process.pid, SIGKILL)
            killed = true
        }
    }
    process.finish(status: status ?? reaper.waitForExit(process.pid), timedOut: killed)
}
