import CladeStore
import Foundation
import Testing

/// The quick start's workload with real VMs: a Debian Python image built by mmdebstrap from
/// the host's Debian mirror (twice, in two stores, to show it is reproducible), baked after a
/// numpy warm-up, forked eight times; every child answers with its own hostname.
@Suite(.serialized) struct PythonImageTests {
    static let first = CLIHarness(home: CLIHarness.privateHome("python-a"))
    static let second = CLIHarness(home: CLIHarness.privateHome("python-b"))
    static let packages = "python3,python3-numpy"

    func rootfs(_ cli: CLIHarness, _ name: String) throws -> String {
        let result = try cli.run(["image", "inspect", name])
        try #require(result.status == 0, "\(result.stderr)")
        let record = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        return try #require(record["rootfs"] as? String)
    }

    @Test func debianImagesAreReproducibleAcrossStores() throws {
        for cli in [Self.first, Self.second] {
            let build = try cli.run(["image", "build", "--debian", "bookworm", "--packages", Self.packages, "--name", "python"], timeout: 1200)
            try #require(build.status == 0, "mmdebstrap build failed: \(build.stderr)")
        }
        #expect(try rootfs(Self.first, "python") == rootfs(Self.second, "python"), "two builds of the same suite and packages differ")
        let user = try Self.first.run(["run", "--image", "python", "--", "sh", "-c", "id -un; id -u; pwd; echo $HOME; readlink -f /bin/sh; command -v bash"])
        #expect(user.stdout == "user\n1000\n/home/user\n/home/user\n/usr/bin/dash\n/usr/bin/bash\n", "\(user.stderr)")
    }

    @Test func eightForksOfAWarmedPythonSnapshotEachRunNumpy() throws {
        let cli = Self.first
        if try cli.run(["image", "inspect", "python"]).status != 0 {
            let build = try cli.run(["image", "build", "--debian", "bookworm", "--packages", Self.packages, "--name", "python"], timeout: 1200)
            try #require(build.status == 0, "\(build.stderr)")
        }
        let bake = try cli.run(["bake", "--image", "python", "--memory", "512", "--tag", "py-warm", "--warm", "python3 -c 'import numpy'"])
        try #require(bake.status == 0, "bake failed: \(bake.stderr)")
        defer { _ = try? cli.run(["rmi", "--cascade", "py-warm"]) }
        let fork = try cli.run(["fork", "py-warm", "-n", "8", "--json"])
        try #require(fork.status == 0, "fork failed: \(fork.stderr)")
        let ids = fork.stdout.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["id"] as? String
        }
        try #require(ids.count == 8)
        var hostnames = Set<String>()
        for id in ids {
            let result = try cli.run(["exec", id, "--", "python3", "-c", "import numpy, socket; print(socket.gethostname(), numpy.arange(1, 101).sum())"])
            #expect(result.status == 0, "child \(id): \(result.stderr)")
            let words = result.stdout.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            #expect(words.count == 2 && words[1] == "5050", "child \(id) printed \(result.stdout)")
            if let name = words.first { hostnames.insert(name) }
        }
        #expect(hostnames.count == 8, "children share hostnames: \(hostnames)")
        #expect(try cli.run(["kill"] + ids).status == 0)
    }

    /// `bake --interpreter` leaves Python running with numpy imported; `clade eval`, forkd's own
    /// PyPI client (straight to the agent, as forkd's `Sandbox.eval` does) and the daemon's
    /// `/eval` route all reach it, and every fork's interpreter keeps its own state.
    @Test func aResidentInterpreterAnswersEvalInEachForkWithItsOwnState() async throws {
        let cli = Self.first
        if try cli.run(["image", "inspect", "python"]).status != 0 {
            let build = try cli.run(["image", "build", "--debian", "bookworm", "--packages", Self.packages, "--name", "python"], timeout: 1200)
            try #require(build.status == 0, "\(build.stderr)")
        }
        let bake = try cli.run(["bake", "--image", "python", "--memory", "512", "--tag", "py-eval", "--interpreter", "python3", "--preload", "import numpy"], timeout: 900)
        try #require(bake.status == 0, "bake failed: \(bake.stderr)")
        defer { _ = try? cli.run(["rmi", "--cascade", "py-eval"]) }
        let fork = try cli.run(["fork", "py-eval", "-n", "2", "--json"])
        try #require(fork.status == 0, "fork failed: \(fork.stderr)")
        let rows = fork.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let ids = rows.compactMap { $0["id"] as? String }
        try #require(ids.count == 2)
        defer { _ = try? cli.run(["kill"] + ids) }

        #expect(try cli.run(["eval", ids[0], "counter = 41"]).status == 0)
        #expect(try cli.run(["eval", ids[1], "counter = 1"]).status == 0)
        #expect(try cli.run(["eval", ids[0], "counter + 1"]).stdout == "42\n")
        #expect(try cli.run(["eval", ids[1], "counter + 1"]).stdout == "2\n")
        let numpy = try cli.run(["eval", ids[0], "int(numpy.arange(5).sum())"])
        #expect(numpy.stdout == "10\n", "\(numpy.stderr)")
        let failing = try cli.run(["eval", ids[0], "1/0"])
        #expect(failing.status == 1 && failing.stderr.contains("ZeroDivisionError"))
        let printed = try cli.run(["eval", ids[1], "--json", "print('hi'); 6 * 7"])
        let answer = try #require(try JSONSerialization.jsonObject(with: Data(printed.stdout.utf8)) as? [String: Any])
        #expect(answer["result"] as? String == "42" && answer["stdout"] as? String == "hi\n" && answer["exit_code"] as? Int == 0)

        // forkd's own client, from PyPI, against the fork's agent.
        let listed = try cli.run(["ls", "--json"])
        let sandboxes = try #require(try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]])
        let endpoint = try #require(sandboxes.first { $0["id"] as? String == ids[0] }?["agent_endpoint"] as? String)
        let python = CLIHarness.packageRoot.appendingPathComponent(".build/pyclients/bin/python")
        try #require(FileManager.default.isExecutableFile(atPath: python.path), "forkd's client is not installed: run scripts/python-clients.sh (scripts/test.sh does)")
        let script = """
            import forkd
            box = forkd.Sandbox(target="\(endpoint)", spawn=False)
            print(box.eval("numpy.zeros(3).tolist()"))
            print(box.eval("counter"))
            print(box.commands.run("echo from-forkd").stdout.strip())
            """
        let forkdRun = try ExternalCommand(python.path, ["-c", script]).run()
        #expect(forkdRun.status == 0 && forkdRun.stdout == "[0.0, 0.0, 0.0]\n41\nfrom-forkd\n", "forkd client: \(forkdRun.stdout) \(forkdRun.stderr)")

        // The daemon's forkd route, through forkd's Controller.
        let daemon = DaemonProcess(home: cli.home)
        try daemon.start()
        defer { daemon.stop() }
        let controller = """
            import forkd.controller as c
            api = c.Controller("http://127.0.0.1:\(daemon.port)", token="\(daemon.token)")
            answer = api.eval_code("\(ids[1])", "counter * 100")
            print(answer["result"], answer["exit_code"], answer.get("error"))
            """
        let controllerRun = try ExternalCommand(python.path, ["-c", controller]).run()
        #expect(controllerRun.status == 0 && controllerRun.stdout == "100 0 None\n", "forkd controller: \(controllerRun.stdout) \(controllerRun.stderr)")
    }

    /// A WebSocket echo server in the guest, reached by a real WebSocket client (the `websockets`
    /// package) through `clade serve --proxy-listen`, which relays the upgraded connection.
    @Test func aWebSocketReachesTheGuestThroughTheProxyListener() async throws {
        let cli = Self.first
        if try cli.run(["image", "inspect", "python"]).status != 0 {
            let build = try cli.run(["image", "build", "--debian", "bookworm", "--packages", Self.packages, "--name", "python"], timeout: 1200)
            try #require(build.status == 0, "\(build.stderr)")
        }
        let boot = try cli.run(["boot", "--image", "python", "--memory", "512", "--json"])
        try #require(boot.status == 0, "\(boot.stderr)")
        let id = try #require((try JSONSerialization.jsonObject(with: Data(boot.stdout.utf8)) as? [String: Any])?["id"] as? String)
        defer { _ = try? cli.run(["kill", id]) }
        // A minimal RFC 6455 echo server from Python's standard library: handshake, then echo each text frame.
        let server = #"""
            import base64, hashlib, socket, struct
            listener = socket.socket(); listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("0.0.0.0", 8765)); listener.listen(4)
            def exact(conn, n):
                data = b""
                while len(data) < n:
                    chunk = conn.recv(n - len(data))
                    if not chunk: raise EOFError
                    data += chunk
                return data
            while True:
                conn, _ = listener.accept()
                head = b""
                while b"\r\n\r\n" not in head: head += conn.recv(4096)
                key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
                accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
                try:
                    while True:
                        first, second = exact(conn, 2)
                        length = second & 0x7F
                        if length == 126: length = struct.unpack(">H", exact(conn, 2))[0]
                        elif length == 127: length = struct.unpack(">Q", exact(conn, 8))[0]
                        mask = exact(conn, 4)
                        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(exact(conn, length)))
                        if first & 0x0F == 8: break
                        reply = b"echo: " + payload
                        header = bytes([0x81, len(reply)]) if len(reply) < 126 else bytes([0x81, 126]) + struct.pack(">H", len(reply))
                        conn.sendall(header + reply)
                except EOFError:
                    pass
                conn.close()
            """#
        let source = FileManager.default.temporaryDirectory.appendingPathComponent("clade-ws-\(getpid()).py")
        try server.write(to: source, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: source) }
        #expect(try cli.run(["files", "put", id, source.path, "/tmp/ws.py"]).status == 0)
        let started = try cli.run(["exec", id, "--detach", "--tag", "ws", "--", "python3", "/tmp/ws.py"])
        #expect(started.status == 0, "\(started.stderr)")

        let daemon = DaemonProcess(home: cli.home)
        // Outside the kernel's ephemeral range (32768-60999), where a client socket could hold
        // it; another suite's listener still could, so a taken port is tried again elsewhere.
        var proxyPort = 0
        for attempt in 1...3 {
            proxyPort = Int.random(in: 12000...15999)
            daemon.extraArguments = ["--proxy-domain", "sandbox.test", "--proxy-listen", "127.0.0.1:\(proxyPort)"]
            do {
                try daemon.start()
                break
            } catch where attempt < 3 {
                continue
            }
        }
        defer { daemon.stop() }
        let python = CLIHarness.packageRoot.appendingPathComponent(".build/pyclients/bin/python")
        try #require(FileManager.default.isExecutableFile(atPath: python.path), "the websockets client is not installed: run scripts/python-clients.sh (scripts/test.sh does)")
        let client = """
            import asyncio, time, websockets
            async def main():
                deadline = time.monotonic() + 120  # python starting under emulation; a bound, not a speed
                while time.monotonic() < deadline:
                    try:
                        # The URL names the sandbox as wildcard DNS would; the socket goes to the proxy listener.
                        async with websockets.connect("ws://8765-\(id).sandbox.test:\(proxyPort)/", host="127.0.0.1", port=\(proxyPort)) as ws:
                            for word in ["one", "two", "three"]:
                                await ws.send(word)
                                print(await ws.recv())
                            return
                    except (OSError, websockets.exceptions.InvalidHandshake, websockets.exceptions.InvalidMessage):
                        time.sleep(0.2)
                raise SystemExit("the guest's WebSocket server never answered")
            asyncio.run(main())
            """
        let run = try ExternalCommand(python.path, ["-c", client]).run()
        #expect(run.status == 0 && run.stdout == "echo: one\necho: two\necho: three\n", "websocket client: \(run.stdout) \(run.stderr)")
        // A host outside the domain is refused with a status, not relayed.
        let refused = try ExternalCommand("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: example.com", "http://127.0.0.1:\(proxyPort)/"]).run()
        #expect(refused.stdout == "404")
    }
}
