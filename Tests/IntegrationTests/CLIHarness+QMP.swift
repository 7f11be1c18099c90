import CladeStore
import Foundation

extension CLIHarness {
    /// Sends `commands` to the QEMU monitor of sandbox `id` (after `qmp_capabilities`), one at a
    /// time, each after the previous one's reply; stdout holds each reply's `return` as one JSON
    /// line per command. A QMP error fails the call with QEMU's message.
    /// With `vmMayDie`, a monitor that closes mid-way (a VMM killed by what it was asked) ends the
    /// call quietly: the caller checks the outcome itself.
    @discardableResult
    func qmp(_ id: String, _ commands: [[String: Any]], vmMayDie: Bool = false) throws -> ExternalCommand.Output {
        let socket = home.appendingPathComponent("sandboxes/\(id)/qmp.sock").path
        let encoded = try String(decoding: JSONSerialization.data(withJSONObject: [["execute": "qmp_capabilities"]] + commands), as: UTF8.self)
        let script = """
            import json, socket, sys
            s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw"); f.readline()
            for command in json.loads(sys.argv[2]):
                f.write(json.dumps(command) + "\\n"); f.flush()
                try:
                    reply = json.loads(f.readline() or "{}")
                    while "event" in reply: reply = json.loads(f.readline() or "{}")
                except (OSError, ValueError):
                    if sys.argv[3] == "1": sys.exit(0)
                    raise
                if "error" in reply: sys.exit(reply["error"]["desc"])
                print(json.dumps(reply.get("return")))
            """
        let result = try ExternalCommand("python3", ["-c", script, socket, encoded, vmMayDie ? "1" : "0"]).run()
        guard result.status == 0 else { throw HarnessError("QMP \(commands) for sandbox \(id): \(result.stderr)") }
        return result
    }
}
