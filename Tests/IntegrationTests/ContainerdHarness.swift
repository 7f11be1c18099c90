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

    /// What the CRI tests need beyond ``missing``.
    static var missingForCRI: String? {
        if let missing { return missing }
        if !FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge") {
            return "CNI's bridge plugin is not installed (apt-get install -y containernetworking-plugins; .ci/run does)"
        }
        if (try? ExternalCommand("/usr/bin/python3", ["-c", "import grpc, grpc_tools"]).run().status) != 0 {
            return "Debian's gRPC for Python is not installed (apt-get install -y python3-grpcio python3-grpc-tools; .ci/run does)"
        }
        return nil
    }

    /// The bridge CNI's plugin makes for the CRI tests' pods (removed at ``stop()``).
    var bridge: String { "ctd\(directory.lastPathComponent.suffix(5))" }
    /// The bridge's own address, the pods' gateway (host-local IPAM gives a gateway bridge the
    /// subnet's first address); it exists once the first pod is networked.
    private(set) var gateway = ""

    /// Starts containerd; with `sandboxImage`, its CRI plugin too: clade as the default runtime
    /// (`pod_annotations = ["clade.dev/*"]` passes the snapshot annotation on), pods networked by
    /// CNI's bridge plugin from Debian's containernetworking-plugins, and that image (imported
    /// into the CRI's namespace by the caller) as the pause image, since no registry is reached.
    func start(sandboxImage: String? = nil) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var config = """
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
        if let sandboxImage {
            let networks = directory.appendingPathComponent("net.d")
            try FileManager.default.createDirectory(at: networks, withIntermediateDirectories: true)
            let network = "10.\(200 + Int.random(in: 0..<50)).\(Int.random(in: 0..<250))"
            let subnet = network + ".0/24"
            gateway = network + ".1"
            try """
                {"cniVersion": "1.0.0", "name": "\(bridge)", "plugins": [
                  {"type": "bridge", "bridge": "\(bridge)", "isGateway": true, "ipMasq": false,
                   "ipam": {"type": "host-local", "ranges": [[{"subnet": "\(subnet)"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
                  {"type": "loopback"}]}
                """.write(to: networks.appendingPathComponent("10-test.conflist"), atomically: true, encoding: .utf8)
            config += """
                [plugins."io.containerd.grpc.v1.cri"]
                  sandbox_image = "\(sandboxImage)"
                  [plugins."io.containerd.grpc.v1.cri".containerd]
                    default_runtime_name = "clade"
                  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.clade]
                    runtime_type = "io.containerd.clade.v2"
                    pod_annotations = ["clade.dev/*"]
                  [plugins."io.containerd.grpc.v1.cri".cni]
                    bin_dir = "/usr/lib/cni"
                    conf_dir = "\(networks.path)"

                """
        }
        let configFile = directory.appendingPathComponent("config.toml")
        try config.write(to: configFile, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = ExternalCommand.locate("containerd")
        process.arguments = ["--config", configFile.path]
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = CLIHarness.binary.deletingLastPathComponent().path + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
        environment["CLADE_HOME"] = cli.home.path
        // The tests' registries serve plain HTTP on loopback.
        environment["CLADE_INSECURE_REGISTRIES"] = "127.0.0.1"
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

    /// Runs the test's CRI client (`Tests/Fixtures/cri-client.py`, on Debian's python3-grpcio)
    /// against this containerd's CRI plugin; returns its JSON answer.
    func cri(_ arguments: [String]) throws -> (status: Int32, json: [String: Any]) {
        let script = CLIHarness.packageRoot.appendingPathComponent("Tests/Fixtures/cri-client.py").path
        let output = try ExternalCommand("/usr/bin/python3", [script, socket] + arguments).run()
        let line = output.stdout.split(separator: "\n").last.map(String.init) ?? ""
        let json = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        guard let json else { throw HarnessError("cri-client \(arguments.joined(separator: " ")): \(output.stdout) \(output.stderr)") }
        return (output.status, json)
    }

    /// `ctr run --rm --runtime io.containerd.clade.v2 [options] IMAGE ID COMMAND...`.
    func run(_ image: String, _ id: String, options: [String] = [], _ command: [String]) throws -> ExternalCommand.Output {
        try ctr(["run", "--rm", "--runtime", "io.containerd.clade.v2"] + options + [image, id] + command)
    }

    /// Polls `condition` (each poll a real query of containerd or /proc) until it holds or 60 s pass.
    @discardableResult
    static func waitFor(_ condition: @escaping () throws -> Bool) throws -> Bool {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if try condition() { return true }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return false
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
        _ = try? ExternalCommand("ip", ["link", "del", bridge]).run()
        for mount in mounts().reversed() {
            let fields = mount.split(separator: " ")
            if fields.count > 4 { _ = try? ExternalCommand("umount", ["-l", String(fields[4])]).run() }
        }
        let keptLog = FileManager.default.temporaryDirectory.appendingPathComponent("containerd-\(directory.lastPathComponent).log")
        try? FileManager.default.removeItem(at: keptLog)
        try? FileManager.default.moveItem(at: directory.appendingPathComponent("containerd.log"), to: keptLog)
        try? FileManager.default.removeItem(at: directory)
    }
}
