import Foundation
import Testing

/// Real VMs (TCG on CI hosts) driven through the `clade` binary.
@Suite(.serialized) struct ColdBootTests {
    let cli = CLIHarness()

    @Test func runPrintsOutputAndPropagatesExitCodes() throws {
        let hello = try cli.run(["run", "--", "echo", "hello"])
        #expect(hello.status == 0, "stderr: \(hello.stderr)")
        #expect(hello.stdout == "hello\n")

        let seven = try cli.run(["run", "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 7"])
        #expect(seven.status == 7)
        #expect(seven.stdout == "to-out\n")
        #expect(seven.stderr.contains("to-err"))
        #expect(!seven.stdout.contains("to-err"))
        #expect(cli.sandboxDirectories().isEmpty)
        #expect(cli.qemuProcesses().isEmpty)
    }

    /// busybox's wget was reported to crash (exit 139) for URLs in the default image, which
    /// had no nsswitch.conf: a host name looked up through /etc must work.
    @Test func defaultImageResolvesNamesForBusyboxTools() throws {
        let script = "echo served > /var/www/index.html; httpd -p 8080 -h /var/www; wget -q -O- http://localhost:8080/"
        let result = try cli.run(["run", "--", "sh", "-c", script])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout == "served\n")
    }

    @Test func commandOutlivingTimeoutIsKilledAndReported() throws {
        let start = Date()
        let result = try cli.run(["run", "--timeout", "2", "--", "sh", "-c", "sleep 60 & sleep 60"])
        #expect(result.status == 124)
        #expect(result.stderr.contains("timed out after 2"))
        #expect(Date().timeIntervalSince(start) < 50, "the guest's sleep must not be waited for")
        #expect(cli.qemuProcesses().isEmpty)
    }

    @Test func bootExecFilesAndKillLeaveNothingBehind() throws {
        let boot = try cli.run(["boot", "--json"])
        #expect(boot.status == 0, "stderr: \(boot.stderr)")
        let view = try JSONSerialization.jsonObject(with: Data(boot.stdout.utf8)) as? [String: Any]
        let id = try #require(view?["id"] as? String)
        let endpoint = try #require(view?["agent_endpoint"] as? String)
        let pid = try #require(view?["pid"] as? Int)
        #expect(endpoint.hasPrefix("127.0.0.1:"))

        let first = try cli.run(["exec", id, "--", "hostname"])
        #expect(first.status == 0)
        #expect(first.stdout == "\(id)\n")
        let second = try cli.run(["exec", id, "--env", "GREETING=hi there", "--", "sh", "-c", "echo $GREETING > /root/note; cat /root/note"])
        #expect(second.stdout == "hi there\n")

        // write_file / read_file round trip through the forkd-compatible TCP protocol.
        let port = try #require(Int(endpoint.split(separator: ":").last ?? ""))
        let payload = Data((0..<3000).map { UInt8($0 % 251) })
        let write = try AgentSocket.request(port: port, [
            "action": "write_file", "path": "/tmp/blob.bin", "content": payload.base64EncodedString(), "mode": 0o600,
        ])
        #expect(write["error"] == nil)
        let read = try AgentSocket.request(port: port, ["action": "read_file", "path": "/tmp/blob.bin"])
        #expect((read["content"] as? String).flatMap { Data(base64Encoded: $0) } == payload)
        #expect(read["mode"] as? Int == 0o600)
        let ping = try AgentSocket.request(port: port, ["action": "ping"])
        #expect(ping["pong"] as? Bool == true)
        #expect((ping["boot_id"] as? String)?.count == 36)

        // The virtio-serial channel multiplexes: a ping sent after a slow exec is answered first.
        let socketPath = cli.home.appendingPathComponent("sandboxes/\(id)/agent.sock").path
        let replies = try AgentSocket.unixRequests(path: socketPath, lines: [
            #"{"id":"slow","action":"exec","args":["sh","-c","sleep 1; echo done"]}"#,
            #"{"id":"fast","action":"ping"}"#,
        ])
        let console = (try? String(contentsOf: cli.home.appendingPathComponent("sandboxes/\(id)/console.log"), encoding: .utf8)) ?? ""
        #expect(replies.map { $0["id"] as? String } == ["fast", "slow"], "the guest's console ends: \(console.suffix(1500))")
        #expect(replies.last?["stdout"] as? String == "done\n")

        let listed = try cli.run(["ls", "--json"])
        #expect(listed.stdout.contains(id))

        let kill = try cli.run(["kill", id])
        #expect(kill.status == 0, "stderr: \(kill.stderr)")
        #expect(!cli.sandboxDirectories().contains(id))
        #expect(!FileManager.default.fileExists(atPath: "/proc/\(pid)/cmdline") || cli.qemuProcesses().isEmpty)
        #expect(cli.qemuProcesses().isEmpty)
        let again = try cli.run(["exec", id, "--", "true"])
        #expect(again.status != 0)
    }

    @Test func lsCleansUpASandboxWhoseVMWasKilledBehindClade() throws {
        let boot = try cli.run(["boot"])
        #expect(boot.status == 0, "stderr: \(boot.stderr)")
        let id = boot.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let pidText = try String(contentsOf: cli.home.appendingPathComponent("sandboxes/\(id)/qemu.pid"), encoding: .utf8)
        let pid = try #require(Int32(pidText.trimmingCharacters(in: .whitespacesAndNewlines)))
        kill(pid, SIGKILL)
        Thread.sleep(forTimeInterval: 0.5)
        let listed = try cli.run(["ls", "--json"])
        #expect(listed.stdout.contains("\"dead\""))
        #expect(!cli.sandboxDirectories().contains(id))
    }

    @Test func doctorReportsTheAcceleratorAndWhyKVMWasRejected() throws {
        let result = try cli.run(["doctor", "--json"])
        let checks = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
        let accelerator = try #require(checks.first { $0["name"] as? String == "accelerator" })
        let detail = accelerator["detail"] as? String ?? ""
        if detail.hasPrefix("TCG") {
            #expect(detail.contains("KVM"), "a TCG choice must say why KVM was not used: \(detail)")
        } else {
            #expect(detail.hasPrefix("KVM"), "unexpected accelerator report: \(detail)")
        }
        for name in ["qemu", "kernel", "store", "filesystem", "disk space", "catalog"] {
            #expect(checks.contains { $0["name"] as? String == name }, "doctor must check \(name)")
        }
        let catalog = try #require(checks.first { $0["name"] as? String == "catalog" })
        #expect((catalog["detail"] as? String)?.contains("catalog.sqlite: wal") == true, "\(catalog)")
    }
}

/// Speaks the agent's JSON-lines protocol directly, as forkd's Python client does.
enum AgentSocket {
    /// Sends several lines on the VM's virtio-serial unix socket and reads as many replies.
    static func unixRequests(path: String, lines: [String]) throws -> [[String: Any]] {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket failed") }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.prefix(raw.count - 1).enumerated() { raw[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw HarnessError("cannot connect to \(path)") }
        // A request lost on the way must fail the test, not hang the run.
        var patience = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &patience, socklen_t(MemoryLayout<timeval>.size))
        let payload = Data((lines.joined(separator: "\n") + "\n").utf8)
        _ = payload.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        var received = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while received.filter({ $0 == 0x0A }).count < lines.count {
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { break }
            received.append(contentsOf: buffer[0..<count])
        }
        return try received.split(separator: 0x0A).map {
            try JSONSerialization.jsonObject(with: Data($0)) as? [String: Any] ?? [:]
        }
    }

    static func request(port: Int, _ object: [String: Any]) throws -> [String: Any] {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr = in_addr(s_addr: inet_addr("127.0.0.1"))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw HarnessError("cannot connect to 127.0.0.1:\(port)") }
        var line = try JSONSerialization.data(withJSONObject: object)
        line.append(0x0A)
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        var reply = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !reply.contains(0x0A) {
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { break }
            reply.append(contentsOf: buffer[0..<count])
        }
        return try JSONSerialization.jsonObject(with: reply) as? [String: Any] ?? [:]
    }
}
