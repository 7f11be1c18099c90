import CladeGuest
import CladeGuestProtocol
import Foundation

/// A Python interpreter left running in a snapshot with modules already imported, answering
/// `eval` on a unix socket in the guest. Every fork gets its own copy of it, state included.
public enum ResidentInterpreter {
    public static let tag = "interpreter"
    static let directory = "/.clade/run"
    static let script = "/.clade/interpreter.py"
    static let log = "/.clade/run/interpreter.log"

    /// Installs the server script, starts it (tagged, so forks can find it) and waits until it
    /// has run `preload` and answers.
    static func start(on agent: AgentClient, interpreter: String, preload: String?, user: String?, timeout: Double = 900) async throws {
        try await agent.makeDirectory(directory, parents: true, mode: 0o1777)
        try await agent.writeFile(script, data: Data(source.utf8), mode: 0o644)
        let socket = "\(directory)/\(tag).sock"
        var command = "exec \(shellQuoted(interpreter)) \(script) \(socket)"
        if let preload { command += " \(shellQuoted(preload))" }
        command += " 2>\(log)"
        _ = try await agent.startDetached(ProcessSpec(args: ["/bin/sh", "-c", command], user: user, tag: tag, background: true))
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let answer = try? await agent.eval("None", tag: tag, timeout: 30), answer.exitCode == 0 { return }
            let running = try await agent.processes().contains { $0.tag == tag && $0.running }
            if !running {
                let output = (try? await agent.readFile(log)).map { String(decoding: $0, as: UTF8.self) } ?? ""
                throw EngineError.guestFailed("the resident interpreter (\(interpreter)) exited while starting: \(output.suffix(2000))")
            }
            try await Task.sleep(nanoseconds: 200_000_000)
        }
        throw EngineError.guestFailed("the resident interpreter (\(interpreter)) did not answer within \(Int(timeout)) s")
    }

    static func shellQuoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    /// The server. One connection at a time, one JSON line in ({"code"}), one out: `result` is the
    /// repr of a final expression (as a REPL would echo it), `error` the traceback, `exit_code`
    /// 0 or 1 (or SystemExit's code), and what the code printed. Globals persist between calls.
    static let source = #"""
    import ast, contextlib, io, json, os, socket, sys, traceback

    scope = {"__name__": "__main__", "__builtins__": __builtins__}

    def evaluate(code):
        printed, complained = io.StringIO(), io.StringIO()
        answer = {"result": None, "error": None, "exit_code": 0}
        try:
            tree = ast.parse(code, "<eval>", "exec")
            tail = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                tail = ast.Expression(tree.body.pop().value)
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(complained):
                exec(compile(tree, "<eval>", "exec"), scope)
                if tail is not None:
                    value = eval(compile(tail, "<eval>", "eval"), scope)
                    if value is not None:
                        answer["result"] = repr(value)
        except SystemExit as stop:
            answer["exit_code"] = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException:
            answer["error"] = traceback.format_exc()
            answer["exit_code"] = 1
        answer["stdout"] = printed.getvalue()
        answer["stderr"] = complained.getvalue()
        return answer

    def main():
        path = sys.argv[1]
        if len(sys.argv) > 2:
            first = evaluate(sys.argv[2])
            if first["exit_code"] != 0:
                sys.stderr.write(first["error"] or first["stderr"] or "preload failed\n")
                sys.exit(1)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        os.chmod(path, 0o666)
        server.listen(16)
        while True:
            connection, _ = server.accept()
            with connection:
                reader = connection.makefile("rb")
                line = reader.readline()
                if not line:
                    continue
                try:
                    code = json.loads(line).get("code", "")
                    answer = evaluate(code)
                except ValueError as bad:
                    answer = {"result": None, "error": "not a JSON request: %s" % bad, "exit_code": 1, "stdout": "", "stderr": ""}
                connection.sendall(json.dumps(answer).encode() + b"\n")

    main()
    """#
}
