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
}
