import ArgumentParser
import CLinuxShims
import CladeEngine
import CladeGuest
import CladeGuestProtocol
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct Exec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a command in a running sandbox, streaming its output as it comes.",
        discussion: "Exits with the command's exit code (124 when --timeout killed it). -i forwards standard input; --tty runs the command on a pseudo-terminal in raw mode, for an interactive shell.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Seconds before the command's process group is killed.") var timeout: Double?
    @Option(name: .customLong("env"), help: "KEY=VALUE, repeatable; merged over the image's environment.") var environment: [String] = []
    @Option(help: "Working directory in the guest; default: the image's.") var cwd: String?
    @Option(help: "User to run as (name, uid, name:group or uid:gid); default: the image's, else root.") var user: String?
    @Flag(name: [.short, .customLong("interactive")], help: "Forward standard input to the command.") var interactive = false
    @Flag(name: [.short, .customLong("tty")], help: "Run on a pseudo-terminal (implies -i); the local terminal goes raw.") var tty = false
    @Option(help: "Tag the process, so it can be found by `clade ps` and attached to.") var tag: String?
    @Flag(help: "Start the process and print its pid; it keeps running after clade exits.") var detach = false
    @Flag(help: "Wait for the end and print the result as JSON (output collected, not streamed).") var json = false
    @Argument(help: "Sandbox id.") var id: String
    @Argument(parsing: .postTerminator, help: "The command, after --.") var command: [String] = []

    func run() async throws {
        let env = try parseEnvironment(environment)
        let engine = await global.makeEngine()
        await engine.sandboxes.continueIfInterrupted(id)
        if json {
            let response = try await engine.sandboxes.exec(id: id, argv: command, env: env.isEmpty ? nil : env, cwd: cwd, user: user, timeout: timeout)
            return try printJSON(response)
        }
        var spec = ProcessSpec(args: command, env: env.isEmpty ? nil : env, cwd: cwd, user: user, tag: tag, timeout: timeout, background: detach)
        if detach {
            print(try await engine.processes.start(id: id, spec))
            return
        }
        let terminal = tty ? LocalTerminal() : nil
        spec.terminal = terminal?.size ?? (tty ? TerminalSize(rows: 24, cols: 80) : nil)
        let forwardInput = interactive || tty
        let exit: ProcessExit
        do {
            terminal?.enterRawMode()
            defer { terminal?.restore() }
            exit = try await engine.processes.run(id: id, spec, session: { session, pid in
                if let terminal { terminal.forwardResizes(to: session, pid: pid) }
                try await forwardStandardInput(to: session, pid: pid, enabled: forwardInput)
            }, onEvent: { event in
                switch event {
                case .stdout(let data): writeStandardOutput(data)
                case .stderr(let data): writeStandardError(data)
                default: break
                }
            })
        } catch GuestError.agentLacks {
            // A fork of a snapshot baked before protocol 2: the one-shot exec still works.
            let response = try await engine.sandboxes.exec(id: id, argv: command, env: env.isEmpty ? nil : env, cwd: cwd, user: user, timeout: timeout)
            throw ExitCode(emit(response))
        }
        if exit.timedOut { writeStandardError("clade: command timed out after \(timeout ?? 0) s; its process group was killed\n") }
        throw ExitCode(exit.code)
    }
}

/// Sends standard input to the process as it is read, then closes the process's input at end of
/// file (at once when `enabled` is false, so a command waiting for input sees end of file).
private func forwardStandardInput(to session: AgentSession, pid: Int32, enabled: Bool) async throws {
    if enabled {
        let chunks = AsyncStream<Data> { continuation in
            Thread.detachNewThread {
                while true {
                    let data = FileHandle.standardInput.availableData
                    if data.isEmpty { break }
                    continuation.yield(data)
                }
                continuation.finish()
            }
        }
        for await data in chunks {
            var request = AgentRequest(action: .stdin)
            request.pid = pid
            request.data = data.base64EncodedString()
            try await session.send(request)
        }
    }
    var close = AgentRequest(action: .closeStdin)
    close.pid = pid
    try await session.send(close)
}

/// The terminal clade runs in: its size, raw mode while a --tty command runs, and resizes.
final class LocalTerminal: @unchecked Sendable {
    private var saved = termios()
    private var isRaw = false
    private var resizeSource: DispatchSourceSignal?

    var size: TerminalSize? {
        var rows: UInt16 = 0, cols: UInt16 = 0
        guard clade_get_window_size(1, &rows, &cols) == 0, rows > 0, cols > 0 else { return nil }
        return TerminalSize(rows: rows, cols: cols)
    }

    func enterRawMode() {
        guard isatty(0) != 0, tcgetattr(0, &saved) == 0 else { return }
        var raw = saved
        cfmakeraw(&raw)
        if tcsetattr(0, TCSANOW, &raw) == 0 { isRaw = true }
    }

    func restore() {
        resizeSource?.cancel()
        if isRaw { tcsetattr(0, TCSANOW, &saved) }
    }

    func forwardResizes(to session: AgentSession, pid: Int32) {
        signal(SIGWINCH, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGWINCH)
        source.setEventHandler { [weak self] in
            guard let size = self?.size else { return }
            var request = AgentRequest(action: .resize)
            request.pid = pid
            request.pty = size
            Task { try? await session.send(request) }
        }
        source.resume()
        resizeSource = source
    }
}
