import CladeStore
import Foundation

/// A real OCI registry (Debian's docker-registry, the CNCF distribution server) on loopback,
/// with its storage in a temporary directory; optionally behind htpasswd basic auth.
final class TestRegistry: @unchecked Sendable {
    let port: Int
    let root: URL
    private var process: Process
    private let binary: URL

    var address: String { "127.0.0.1:\(port)" }

    init(username: String? = nil, password: String? = nil) throws {
        guard let binary = ExternalCommand.locate("docker-registry") else {
            throw HarnessError("docker-registry is not installed; run scripts/install-deps.sh (Debian package docker-registry)")
        }
        self.binary = binary
        root = FileManager.default.temporaryDirectory.appendingPathComponent("clade-registry-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        var auth = ""
        if let username, let password {
            let htpasswd = try ExternalCommand("htpasswd", ["-Bbn", username, password]).check().stdout
            try htpasswd.write(to: root.appendingPathComponent("htpasswd"), atomically: true, encoding: .utf8)
            auth = "auth:\n  htpasswd:\n    realm: clade-test\n    path: \(root.path)/htpasswd\n"
        }
        var lastError = ""
        for _ in 0..<5 {
            let port = Int.random(in: 27000...31999)
            let config = """
            version: 0.1
            log:
              level: warn
            storage:
              filesystem:
                rootdirectory: \(root.path)/data
            http:
              addr: 127.0.0.1:\(port)
            \(auth)
            """
            let configFile = root.appendingPathComponent("config.yml")
            try config.write(to: configFile, atomically: true, encoding: .utf8)
            let process = Process()
            process.executableURL = binary
            process.arguments = ["serve", configFile.path]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            for _ in 0..<100 where process.isRunning {
                if (try? ExternalCommand("bash", ["-c", "exec 3<>/dev/tcp/127.0.0.1/\(port)"]).run().status) == 0 {
                    self.port = port
                    self.process = process
                    return
                }
                Thread.sleep(forTimeInterval: 0.05)
            }
            process.terminate()
            lastError = "docker-registry did not listen on port \(port)"
        }
        throw HarnessError(lastError)
    }

    /// Kills the registry as a crash would, keeping its storage for ``resume()``.
    func halt() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Starts the registry again on the same port with the same storage; waits until it listens.
    func resume() throws {
        let process = Process()
        process.executableURL = binary
        process.arguments = ["serve", root.appendingPathComponent("config.yml").path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        for _ in 0..<100 where process.isRunning {
            if (try? ExternalCommand("bash", ["-c", "exec 3<>/dev/tcp/127.0.0.1/\(port)"]).run().status) == 0 { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw HarnessError("docker-registry did not listen again on port \(port)")
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: root)
    }
}
