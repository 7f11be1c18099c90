#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import Foundation
import Logging

/// Drives `qemu-system-x86_64`: daemonized processes, one QMP socket each.
public struct QEMUDriver: Hypervisor {
    public let name = "qemu"
    public let executable: String
    private let logger: Logger

    public init(executable: String = "qemu-system-x86_64", logger: Logger = Logger(label: "clade.qemu")) {
        self.executable = executable
        self.logger = logger
    }

    public func version() throws -> String {
        guard ExternalCommand.locate(executable) != nil else { throw VMMError.qemuMissing }
        let output = try ExternalCommand(executable, ["--version"]).check().stdout
        // "QEMU emulator version 7.2.22 (Debian ...)"
        let words = output.split(whereSeparator: \.isWhitespace)
        if let index = words.firstIndex(of: "version"), index + 1 < words.count { return String(words[index + 1]) }
        return output.split(separator: "\n").first.map(String.init) ?? "unknown"
    }

    public func launch(_ spec: MachineSpec) async throws -> Int32 {
        guard let qemu = ExternalCommand.locate(executable) else { throw VMMError.qemuMissing }
        for socket in [spec.qmpSocket, spec.agentSocket] where socket.path.utf8.count > 107 {
            throw VMMError.socketPathTooLong(socket.path)
        }
        let arguments = QEMUCommandLine.arguments(for: spec)
        logger.debug("starting qemu", metadata: ["vm": "\(spec.name)", "accel": "\(spec.accelerator.rawValue)"])
        let launchLog = spec.pidFile.deletingLastPathComponent().appendingPathComponent("qemu-launch.log")
        let status = try DetachedLauncher.run(qemu, arguments: arguments, log: launchLog)
        guard status == 0 else {
            let output = (try? String(contentsOf: launchLog, encoding: .utf8)) ?? ""
            let message = output.split(separator: "\n").filter { !$0.isEmpty }.suffix(3).joined(separator: "; ")
            throw VMMError.launchFailed(reason: message.isEmpty ? "exit status \(status)" : message)
        }
        guard let pid = ProcessControl.readPidFile(spec.pidFile) else {
            throw VMMError.launchFailed(reason: "QEMU exited without writing its pid file \(spec.pidFile.path)")
        }
        return pid
    }

    public func stop(pid: Int32, controlSocket: URL, marker: String) async {
        guard ProcessControl.isAlive(pid, marker: marker) else { return }
        if (try? FileSystem.exists(controlSocket)) == true {
            _ = try? await withTimeout(2, what: "QMP quit") {
                try await QMPClient.withConnection(socket: controlSocket, timeout: 2, logger: logger) { client in
                    _ = try? await client.execute("quit", timeout: 2)
                }
            }
            if await ProcessControl.waitForExit(pid, marker: marker, timeout: 3) { return }
            logger.warning("QEMU did not quit; killing it", metadata: ["pid": "\(pid)"])
        }
        ProcessControl.forceKill(pid, marker: marker)
        _ = await ProcessControl.waitForExit(pid, marker: marker, timeout: 5)
    }
}
