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
}
