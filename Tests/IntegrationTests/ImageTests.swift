import CladeStore
import Foundation
import Testing

/// Container images with real VMs and a real registry: a three-layer OCI image built by
/// Tests/Fixtures/make-layered-image.py (whiteouts, an opaque directory, hard links, setuid, a
/// file capability, a device node, owners, a config with User/Env/WorkingDir/Entrypoint/Cmd)
/// is pushed to docker-registry with skopeo, pulled, booted and checked from inside the guest.
@Suite(.serialized) struct ImageTests {
    static let fixtures = CLIHarness.packageRoot.appendingPathComponent("Tests/Fixtures")
    static let cli = CLIHarness(home: CLIHarness.privateHome("images"))

    /// Builds the layout once per run: a busybox base with the fixture's layers on top.
    static let layout: Result<URL, HarnessError> = {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("clade-image-fixture-\(getpid())")
        let base = work.appendingPathComponent("base")
        let layout = work.appendingPathComponent("layout")
        do {
            try FileManager.default.createDirectory(at: base.appendingPathComponent("bin"), withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: base.appendingPathComponent("bin/busybox").path)
            try FileManager.default.createSymbolicLink(atPath: base.appendingPathComponent("bin/sh").path, withDestinationPath: "busybox")
            try ExternalCommand("python3", [fixtures.appendingPathComponent("make-layered-image.py").path, base.path, layout.path, "v1"]).check()
            return .success(layout)
        } catch {
            return .failure(HarnessError("building the fixture image failed: \(error)"))
        }
    }()

    func push(_ layout: URL, to registry: TestRegistry, as name: String) throws {
        try ExternalCommand("skopeo", ["copy", "--quiet", "--dest-tls-verify=false", "oci:\(layout.path):v1", "docker://\(registry.address)/\(name)"]).check()
    }

    func inspect(_ cli: CLIHarness, _ name: String) throws -> [String: Any] {
        let result = try cli.run(["image", "inspect", name])
        try #require(result.status == 0, "inspect failed: \(result.stderr)")
        return try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
    }

    @Test func pulledLayersApplyExactlyAndTheConfigDrivesExec() throws {
        let layout = try Self.layout.get()
        let registry = try TestRegistry()
        defer { registry.stop() }
        try push(layout, to: registry, as: "tests/layered:v1")
        let pull = try Self.cli.run(["image", "pull", "--insecure", "\(registry.address)/tests/layered:v1", "--name", "layered"])
        try #require(pull.status == 0, "pull failed: \(pull.stderr)")
        let record = try inspect(Self.cli, "layered")
        #expect(record["source"] as? String == "\(registry.address)/tests/layered:v1")
        #expect((record["manifest_digest"] as? String)?.hasPrefix("sha256:") == true)
        let config = try #require(record["config"] as? [String: Any])
        #expect(config["uid"] as? Int == 1234)
        #expect(config["exposed_ports"] as? [String] == ["8080/tcp"])
        #expect((config["labels"] as? [String: String])?["org.example.test"] == "yes")

        // No command: the image's Entrypoint + Cmd, as its user with its environment.
        let entry = try Self.cli.run(["run", "--image", "layered"])
        #expect(entry.status == 0, "\(entry.stderr)")
        #expect(entry.stdout == "entry:hello from config:1234\n")

        let boot = try Self.cli.run(["boot", "--image", "layered"])
        try #require(boot.status == 0, "boot failed: \(boot.stderr)")
        let id = boot.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? Self.cli.run(["kill", id]) }
        func exec(_ script: String, _ extra: [String] = []) throws -> String {
            let result = try Self.cli.run(["exec"] + extra + [id, "--", "sh", "-c", script])
            #expect(result.status == 0, "\(script): \(result.stderr)")
            return result.stdout
        }
        #expect(try exec("id -u; id -g; pwd; echo $GREETING; echo $HOME") == "1234\n1234\n/home/app\nhello from config\n/home/app\n")
        #expect(try exec("id -un; pwd; echo $GREETING", ["--user", "root", "--cwd", "/", "--env", "GREETING=overridden"]) == "root\n/\noverridden\n")
        // Whiteouts and the opaque directory took effect; lower files not hidden are still there.
        #expect(try exec("ls /etc/removeme 2>&1 || true; ls /data; ls /opt/keep") == "ls: /etc/removeme: No such file or directory\nupper-b\nx\n")
        // Hard links share an inode; setuid, sticky, owner and mode survive; device, FIFO, symlink, long name.
        #expect(try exec("stat -c %i /usr/local/bin/tool; stat -c %i /usr/local/bin/tool-link").split(separator: "\n").count == 2)
        let inodes = try exec("stat -c %i /usr/local/bin/tool /usr/local/bin/tool-link").split(separator: "\n")
        #expect(inodes.count == 2 && inodes[0] == inodes[1], "hard link lost: \(inodes)")
        #expect(try exec("stat -c %A /usr/local/bin/suid /opt/sticky") == "-rwsr-xr-x\ndrwxrwxrwt\n")
        #expect(try exec("stat -c '%u %g %a' /home/app /home/app/owned") == "1234 1234 750\n1234 50 640\n")
        #expect(try exec("stat -c '%F %t %T' /opt/null-dev; stat -c %F /opt/fifo; cat /opt/link") == "character special file 1 3\nfifo\nkept\n")
        #expect(try exec("cat /opt/" + String(repeating: "l", count: 200)) == "long\n")
        // The file capability (cap_net_raw = bit 13) is granted when the file runs, as user app.
        #expect(try exec("/usr/local/capbin/cat /proc/self/status | grep CapEff") == "CapEff:\t0000000000002000\n")
    }

    @Test func theSameImageGivesTheSameRootfsFromAnyStoreAndAnySource() throws {
        let layout = try Self.layout.get()
        let registry = try TestRegistry()
        defer { registry.stop() }
        try push(layout, to: registry, as: "tests/same:v1")
        var digests: [String] = []
        for name in ["same-a", "same-b"] {
            let cli = CLIHarness(home: CLIHarness.privateHome(name))
            let pull = try cli.run(["image", "pull", "--insecure", "\(registry.address)/tests/same:v1", "--name", "same"])
            try #require(pull.status == 0, "pull into \(name) failed: \(pull.stderr)")
            digests.append(try #require(try inspect(cli, "same")["rootfs"] as? String))
        }
        // An OCI layout and a docker save archive of the same image: one ingestion path.
        let fromLayout = try Self.cli.run(["image", "import", "\(layout.path):v1", "--name", "same-layout"])
        try #require(fromLayout.status == 0, "\(fromLayout.stderr)")
        digests.append(try #require(try inspect(Self.cli, "same-layout")["rootfs"] as? String))
        // Docker's formats have no zstd layers: the archive is made from a gzip-only twin.
        let work = layout.deletingLastPathComponent()
        let gzipLayout = work.appendingPathComponent("layout-gzip")
        let archive = work.appendingPathComponent("saved.tar")
        for stale in [gzipLayout, archive] { try? FileManager.default.removeItem(at: stale) }
        try ExternalCommand("python3", [
            Self.fixtures.appendingPathComponent("make-layered-image.py").path, work.appendingPathComponent("base").path, gzipLayout.path, "v1", "--no-zstd",
        ]).check()
        try ExternalCommand("skopeo", ["copy", "--quiet", "oci:\(gzipLayout.path):v1", "docker-archive:\(archive.path):tests/same:v1"]).check()
        let fromArchive = try Self.cli.run(["image", "import", archive.path, "--name", "same-archive"])
        try #require(fromArchive.status == 0, "\(fromArchive.stderr)")
        digests.append(try #require(try inspect(Self.cli, "same-archive")["rootfs"] as? String))
        #expect(Set(digests).count == 1, "rootfs digests differ: \(digests)")
    }

    @Test func anInterruptedPullResumes() throws {
        let layout = try Self.layout.get()
        let registry = try TestRegistry()
        defer { registry.stop() }
        try push(layout, to: registry, as: "tests/resume:v1")
        var cut = CLIHarness(home: CLIHarness.privateHome("image-resume"))
        cut.environment = ["CLADE_FAULT": "pull-blob-half-written"]
        let first = try cut.run(["image", "pull", "--insecure", "\(registry.address)/tests/resume:v1", "--name", "resumed"])
        #expect(first.status != 0, "the fault point did not fire")
        let blobs = cut.home.appendingPathComponent("blobs/sha256")
        let partials = try FileManager.default.contentsOfDirectory(atPath: blobs.path).filter { $0.hasSuffix(".partial") }
        #expect(partials.count == 1, "expected one half-written blob, found \(partials)")
        #expect(try cut.run(["image", "ls"]).stdout.contains("resumed") == false)
        cut.environment = ["CLADE_LOG_LEVEL": "info"]
        let second = try cut.run(["image", "pull", "--insecure", "\(registry.address)/tests/resume:v1", "--name", "resumed"])
        try #require(second.status == 0, "resumed pull failed: \(second.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: blobs.path).filter { $0.hasSuffix(".partial") }.isEmpty)
        let run = try cut.run(["run", "--image", "resumed", "--", "cat", "/opt/keep/x"])
        #expect(run.stdout == "kept\n", "\(run.stderr)")
    }

    @Test func everyHostileLayerInTheCorpusIsRefusedWithNothingLeftBehind() throws {
        let corpus = FileManager.default.temporaryDirectory.appendingPathComponent("clade-hostile-\(getpid())")
        try ExternalCommand("python3", [Self.fixtures.appendingPathComponent("hostile-layers.py").path, corpus.path]).check()
        let cli = CLIHarness(home: CLIHarness.privateHome("image-hostile"))
        let cases = try String(contentsOf: corpus.appendingPathComponent("expected.tsv"), encoding: .utf8)
            .split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
        for entry in cases {
            let result = try cli.run(["image", "import", corpus.appendingPathComponent(entry[0]).path, "--name", "hostile", "--size-limit", "16"])
            #expect(result.status == 64, "\(entry[0]) was not refused as bad input: \(result.status) \(result.stderr)")
            #expect(result.stderr.contains(entry[1]), "\(entry[0]): the refusal does not name '\(entry[1])': \(result.stderr)")
            for directory in ["blobs/sha256", "tmp", "images"] {
                let left = (try? FileManager.default.contentsOfDirectory(atPath: cli.home.appendingPathComponent(directory).path)) ?? []
                #expect(left.isEmpty, "\(entry[0]) left \(left) in \(directory)")
            }
        }
        // A layer bigger than its manifest declares is refused before it is unpacked.
        let layout = try Self.layout.get()
        let liar = corpus.appendingPathComponent("liar-layout")
        try ExternalCommand("cp", ["-a", layout.path, liar.path]).check()
        try ExternalCommand("python3", ["-c", Self.shrinkFirstLayerSize, liar.path]).check()
        let result = try cli.run(["image", "import", "\(liar.path):v1", "--name", "liar"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("size"), "\(result.stderr)")
        #expect(try cli.run(["image", "ls"]).stdout.contains("liar") == false)
    }

    /// Rewrites the layout's manifest so its first layer declares one byte less than it has.
    static let shrinkFirstLayerSize = """
        import hashlib, json, os, sys
        root = sys.argv[1]
        index = json.load(open(os.path.join(root, "index.json")))
        entry = index["manifests"][0]
        path = os.path.join(root, "blobs", "sha256", entry["digest"].split(":")[1])
        manifest = json.load(open(path))
        manifest["layers"][0]["size"] -= 1
        data = json.dumps(manifest).encode()
        digest = hashlib.sha256(data).hexdigest()
        open(os.path.join(root, "blobs", "sha256", digest), "wb").write(data)
        entry["digest"], entry["size"] = "sha256:" + digest, len(data)
        json.dump(index, open(os.path.join(root, "index.json"), "w"))
        """
}

extension ImageTests {
    @Test func gcFreesWhatRemovalLeftButNothingALiveForkUses() throws {
        let layout = try Self.layout.get()
        let cli = CLIHarness(home: CLIHarness.privateHome("image-gc"))
        try #require(try cli.run(["image", "import", "\(layout.path):v1", "--name", "gc-image"]).status == 0)
        let record = try inspect(cli, "gc-image")
        let rootfs = try #require(record["rootfs"] as? String)
        let layers = try #require(record["layers"] as? [String])
        let bake = try cli.run(["bake", "--image", "gc-image", "--tag", "gc-snap"])
        try #require(bake.status == 0, "bake failed: \(bake.stderr)")
        let fork = try cli.run(["fork", "gc-snap", "--json"])
        try #require(fork.status == 0, "fork failed: \(fork.stderr)")
        let id = try #require((try JSONSerialization.jsonObject(with: Data(fork.stdout.utf8)) as? [String: Any])?["id"] as? String)

        // Remove the snapshot under the running fork, and the image: the report says what gc would free.
        #expect(try cli.run(["rmi", "--force", "gc-snap"]).status == 0)
        let removal = try cli.run(["image", "rm", "gc-image"])
        #expect(removal.status == 0)
        #expect(removal.stderr.contains("can now be freed with `clade gc`"), "\(removal.stderr)")
        let dry = try cli.run(["gc", "--dry-run", "--json"])
        let planned = try #require(try JSONSerialization.jsonObject(with: Data(dry.stdout.utf8)) as? [String: Any])
        let plannedBlobs = try #require(planned["blobs"] as? [String])
        #expect(Set(layers).isSubset(of: Set(plannedBlobs)), "the image's layers are unused now")
        #expect(!plannedBlobs.contains(rootfs), "the live fork's root filesystem is in use")
        #expect(FileManager.default.fileExists(atPath: cli.home.appendingPathComponent("blobs/sha256/\(layers[0].dropFirst(7))").path), "dry run removed something")

        let collected = try cli.run(["gc", "--json"])
        try #require(collected.status == 0, "\(collected.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(collected.stdout.utf8)) as? [String: Any])
        #expect((report["bytes"] as? Int ?? 0) > 0)
        let still = try cli.run(["exec", id, "--", "cat", "/opt/keep/x"])
        #expect(still.stdout == "kept\n", "the fork lost its disk: \(still.stderr)")
        #expect(try cli.run(["kill", id]).status == 0)

        // With the fork gone, its blobs are garbage too, and everything left verifies.
        let last = try cli.run(["gc", "--json"])
        let lastReport = try #require(try JSONSerialization.jsonObject(with: Data(last.stdout.utf8)) as? [String: Any])
        #expect((lastReport["blobs"] as? [String] ?? []).contains(rootfs))
        let blobs = cli.home.appendingPathComponent("blobs/sha256")
        for name in try FileManager.default.contentsOfDirectory(atPath: blobs.path) {
            #expect(try Digest.ofFile(at: blobs.appendingPathComponent(name)).digest.hex == name)
        }
    }
}

extension ImageTests {
    @Test func pullFromARegistryThatRequiresALogin() throws {
        let layout = try Self.layout.get()
        let registry = try TestRegistry(username: "puller", password: "s3cret")
        defer { registry.stop() }
        try ExternalCommand("skopeo", [
            "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", "puller:s3cret", "oci:\(layout.path):v1", "docker://\(registry.address)/tests/private:v1",
        ]).check()
        var anonymous = CLIHarness(home: CLIHarness.privateHome("image-auth"))
        let refused = try anonymous.run(["image", "pull", "--insecure", "\(registry.address)/tests/private:v1", "--name", "private"])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("--username"), "the refusal should say how to log in: \(refused.stderr)")
        anonymous.environment = ["CLADE_REGISTRY_USERNAME": "puller", "CLADE_REGISTRY_PASSWORD": "s3cret"]
        let pulled = try anonymous.run(["image", "pull", "--insecure", "\(registry.address)/tests/private:v1", "--name", "private"])
        #expect(pulled.status == 0, "\(pulled.stderr)")
        #expect(try anonymous.run(["image", "ls"]).stdout.contains("private"))
    }
}
