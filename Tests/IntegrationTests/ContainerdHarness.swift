import CladeStore
import Foundation
import Testing

/// A containerd of the test's own: Debian's containerd 1.6 with its own root, state directory
/// and sockets (never the host's), clade's shim on its PATH and a clade store in its
/// environment, which every shim it starts inherits.
final class ContainerdProcess: @unchecked Sendable {
    /// Short: containerd's sockets (and the shims' under /run/containerd/s) must fit 108 bytes.
    let directory: URL
    let cli: CLIHarness
    private var process: Process?

    var socket: String { directory.appendingPathComponent("c.sock").path }
    var root: URL { directory.appendingPathComponent("root") }

    init(cli: CLIHarness) {
        self.cli = cli
        directory = URL(fileURLWithPath: "/tmp/ctd-\(getpid())-\(UInt16.random(in: 0...UInt16.max))")
    }

    /// Whether this host can run the suite, and if not, why: the tests say so when they skip.
    static var missing: String? {
        if geteuid() != 0 { return "containerd needs root (run the suite as root)" }
        for tool in ["containerd", "ctr"] where ExternalCommand.locate(tool) == nil {
            return "\(tool) is not installed (apt-get install -y containerd; .ci/run does)"
        }
        return nil
    }

    func start() throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let config = """
            version = 2
            root = "\(root.path)"
            state = "\(directory.appendingPathComponent("state").path)"
            [grpc]
              address = "\(socket)"
            [ttrpc]
              address = "\(socket).ttrpc"
            [debug]
              level = "debug"
            """
        let configFile = directory.appendingPathComponent("config.toml")
        try config.write(to: configFile, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = ExternalCommand.locate("containerd")
        process.arguments = ["--config", configFile.path]
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = CLIHarness.binary.deletingLastPathComponent().path + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
        environment["CLADE_HOME"] = cli.home.path
        process.environment = environment
        let log = directory.appendingPathComponent("containerd.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: log)
        process.standardError = try FileHandle(forWritingTo: log)
        try process.run()
        self.process = process
        // Up once it answers on its socket.
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if try ctr(["version"]).status == 0 { return }
            guard process.isRunning else { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw HarnessError("containerd did not come up; its log:\n\(logTail())")
    }

    func logTail(_ lines: Int = 30) -> String {
        let text = (try? String(contentsOf: directory.appendingPathComponent("containerd.log"), encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    /// Runs `ctr --address SOCKET arguments...`.
    func ctr(_ arguments: [String], stdin: Data? = nil) throws -> ExternalCommand.Output {
        try ExternalCommand("ctr", ["--address", socket] + arguments).run(stdin: stdin)
    }

    /// `ctr run --rm --runtime io.containerd.clade.v2 [options] IMAGE ID COMMAND...`.
    func run(_ image: String, _ id: String, options: [String] = [], _ command: [String]) throws -> ExternalCommand.Output {
        try ctr(["run", "--rm", "--runtime", "io.containerd.clade.v2"] + options + [image, id] + command)
    }

    /// The shim processes serving this containerd.
    func shims() -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !data.isEmpty else { return false }
            let commandLine = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            return commandLine.contains("containerd-shim-clade-v2") && commandLine.contains(socket)
        }
    }

    /// Mounts below this containerd's root (the containers' rootfs overlays).
    func mounts() -> [String] {
        let text = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map(String.init).filter { $0.contains(directory.path + "/") }
    }

    func stop() {
        for id in (try? ctr(["containers", "ls", "-q"]).stdout.split(separator: "\n")) ?? [] {
            _ = try? ctr(["task", "kill", "-s", "KILL", String(id)])
            _ = try? ctr(["task", "delete", "-f", String(id)])
            _ = try? ctr(["containers", "rm", String(id)])
        }
        process?.terminate()
        process?.waitUntilExit()
        for mount in mounts().reversed() {
            let fields = mount.split(separator: " ")
            if fields.count > 4 { _ = try? ExternalCommand("umount", ["-l", String(fields[4])]).run() }
        }
        try? FileManager.default.removeItem(at: directory)
    }
}
