import ArgumentParser
import CladeEngine
import CladeGuest
import CladeGuestProtocol
import Foundation

struct ProcessList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps", abstract: "List the processes started in a sandbox (running, and the last that ended).")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON.") var json = false
    @Argument(help: "Sandbox id.") var id: String

    func run() async throws {
        let rows = try await global.makeEngine().processes.agent(for: id).processes()
        if json { return try printJSON(rows) }
        print("PID      TAG           STATE        COMMAND")
        for row in rows {
            let state = row.running ? "running" : "exited \(row.exitCode.map(String.init) ?? "?")"
            print(String(row.pid).padding(toLength: 9, withPad: " ", startingAt: 0)
                + (row.tag ?? "-").padding(toLength: 14, withPad: " ", startingAt: 0)
                + state.padding(toLength: 13, withPad: " ", startingAt: 0)
                + row.args.joined(separator: " "))
        }
    }
}

struct SignalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "signal", abstract: "Send a signal to a process (and its group) in a sandbox.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sandbox id.") var id: String
    @Argument(help: "The process: a pid, or a tag.") var process: String
    @Argument(help: "The signal: a name (TERM, KILL, INT, ...) or number.") var signal: String = "TERM"

    func run() async throws {
        let agent = try await global.makeEngine().processes.agent(for: id)
        if let pid = Int32(process) {
            try await agent.signal(pid: pid, signal)
        } else {
            try await agent.signal(tag: process, signal)
        }
    }
}

struct Attach: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attach",
        abstract: "Stream a running process's further output (by pid or tag) and exit with its exit code.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sandbox id.") var id: String
    @Argument(help: "The process: a pid, or a tag.") var process: String

    func run() async throws {
        let agent = try await global.makeEngine().processes.agent(for: id)
        let pid = Int32(process)
        let exit = try await agent.attach(pid: pid, tag: pid == nil ? process : nil) { event in
            switch event {
            case .stdout(let data): writeStandardOutput(data)
            case .stderr(let data): writeStandardError(data)
            default: break
            }
        }
        throw ExitCode(exit.code)
    }
}

struct Eval: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Evaluate Python code in a sandbox's resident interpreter (see `clade bake --interpreter`).",
        discussion: "Prints what the code printed, then the value of a final expression. State persists between calls in the same sandbox; each fork has its own.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Seconds to wait for the answer.") var timeout: Double = 600
    @Flag(help: "Print forkd's {result, error, exit_code} (and stdout, stderr) as JSON.") var json = false
    @Argument(help: "Sandbox id.") var id: String
    @Argument(help: "The code.") var code: String

    func run() async throws {
        let answer = try await global.makeEngine().processes.eval(id: id, code: code, timeout: timeout)
        if json { return try printJSON(answer) }
        writeStandardOutput(Data(answer.stdout.utf8))
        writeStandardError(Data(answer.stderr.utf8))
        if let result = answer.result { print(result) }
        if let error = answer.error { writeStandardError(error) }
        throw ExitCode(answer.exitCode)
    }
}
