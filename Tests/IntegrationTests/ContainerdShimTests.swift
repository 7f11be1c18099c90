import CladeStore
import Foundation
import Testing

/// clade as containerd's runtime (`io.containerd.clade.v2`), driven by Debian's containerd 1.6
/// and its own `ctr`: a local OCI image cold-booted, a baked snapshot forked by annotation,
/// stdio and exit codes, terminals, exec, kill, pause, metrics, checkpoint, and cleanup after
/// a shim killed mid-pod. Each test has a containerd of its own; the clade store is shared.
@Suite(.serialized) final class ContainerdShimTests {
    static let image = "docker.io/library/clade-shim-test:1"
    static let snapshot = "ctd-baked"
    /// The store every test's containerd hands its shims, with the snapshot baked once.
    static let store = bakedStore("ctd")

    /// A store of its own with the test snapshot baked: each suite counts the VMs in its store,
    /// so suites that run side by side in one process must not share one.
    static func bakedStore(_ name: String) -> Result<CLIHarness, HarnessError> {
        let cli = CLIHarness(home: CLIHarness.privateHome(name))
        do {
            let bake = try cli.run(["bake", "--tag", snapshot, "--warm", "echo baked-into-the-snapshot > /etc/baked"])
            guard bake.status == 0 else { return .failure(HarnessError("bake failed: \(bake.stderr)")) }
            return .success(cli)
        } catch {
            return .failure(HarnessError("\(error)"))
        }
    }

    let containerd: ContainerdProcess
    let cli: CLIHarness

    init() throws {
        if let missing = ContainerdProcess.missing {
            // Said, not silent: the suite cannot run on this host.
            print("ContainerdShimTests skipped: \(missing)")
            throw HarnessError("skipped: \(missing)")
        }
        cli = try Self.store.get()
        containerd = ContainerdProcess(cli: cli)
        try containerd.start()
        try Self.importTestImage(into: containerd)
    }

    /// Builds the test's OCI image (busybox and a marker file) and imports it with `ctr`.
    static func importTestImage(into containerd: ContainerdProcess, namespace: String = "default") throws {
        let archive = containerd.directory.appendingPathComponent("image.tar")
        let root = containerd.directory.appendingPathComponent("image-root")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("bin"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: root.appendingPathComponent("bin/busybox").path)
        for applet in ["sh", "cat", "echo", "sleep", "hostname", "tty", "ls", "true"] {
            try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("bin/\(applet)").path, withDestinationPath: "busybox")
        }
        try FileManager.default.createDirectory(at: root.appendingPathComponent("etc"), withIntermediateDirectories: true)
        try "from-the-oci-image\n".write(to: root.appendingPathComponent("etc/origin"), atomically: true, encoding: .utf8)
        let script = CLIHarness.packageRoot.appendingPathComponent("Tests/Fixtures/make-oci-archive.py").path
        _ = try ExternalCommand("python3", [script, root.path, archive.path, image]).check()
        let imported = try containerd.ctr(["--namespace", namespace, "images", "import", archive.path])
        guard imported.status == 0 else { throw HarnessError("ctr images import: \(imported.stderr)") }
    }

    deinit {
        containerd.stop()
    }

    /// Nothing of a finished container is left: no VM, no clade sandbox, no shim, no mount.
    func expectNothingLeft(_ context: String) {
        #expect(cli.qemuProcesses().isEmpty, "a VM is left after \(context)")
        #expect(cli.sandboxDirectories().isEmpty, "a clade sandbox is left after \(context): \(cli.sandboxDirectories())")
        #expect(containerd.shims().isEmpty, "a shim is left after \(context)")
        #expect(containerd.mounts().filter { $0.contains("/rootfs ") }.isEmpty, "a rootfs mount is left after \(context)")
    }

    @Test func ctrRunsALocalImageWithItsOutputAndExitCode() throws {
        // containerd's own event stream shows what the shim forwarded.
        let events = Process()
        events.executableURL = ExternalCommand.locate("ctr")
        events.arguments = ["--address", containerd.socket, "events"]
        let eventLog = containerd.directory.appendingPathComponent("events.log")
        _ = FileManager.default.createFile(atPath: eventLog.path, contents: nil)
        events.standardOutput = try FileHandle(forWritingTo: eventLog)
        try events.run()
        defer { events.terminate() }
        let failing = try containerd.run(Self.image, "plain", ["/bin/sh", "-c", "cat /etc/origin; echo to-stderr >&2; exit 3"])
        #expect(failing.status == 3, "ctr run exit status: \(failing.stderr)")
        #expect(failing.stdout == "from-the-oci-image\n")
        #expect(failing.stderr.contains("to-stderr"))
        expectNothingLeft("a failing container")
        let passing = try containerd.run(Self.image, "plain2", ["/bin/sh", "-c", "echo ok"])
        #expect(passing.status == 0, "\(passing.stderr)")
        #expect(passing.stdout == "ok\n")
        expectNothingLeft("a passing container")
        let topics = ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
        let forwarded = try ContainerdProcess.waitFor {
            let text = (try? String(contentsOf: eventLog, encoding: .utf8)) ?? ""
            return topics.allSatisfy { text.contains($0) }
        }
        #expect(forwarded, "containerd saw the shim's task events: \((try? String(contentsOf: eventLog, encoding: .utf8)) ?? "")")
    }

    @Test func ctrRunWithATerminal() throws {
        // ctr -t needs a terminal of its own: script(1) gives it one.
        let command = "ctr --address \(containerd.socket) run -t --rm --runtime io.containerd.clade.v2 \(Self.image) tty1 /bin/sh -c 'tty; echo in-a-terminal; exit 5'"
        let output = try ExternalCommand("script", ["-qec", command, "/dev/null"]).run()
        #expect(output.status == 5, "\(output.stdout) \(output.stderr)")
        #expect(output.stdout.contains("/dev/pts/"), "the process has a terminal: \(output.stdout)")
        #expect(output.stdout.contains("in-a-terminal"))
        expectNothingLeft("a terminal container")
    }

    @Test func execKillPauseMetricsAndCheckpointOfARunningTask() throws {
        let run = try containerd.ctr([
            "run", "-d", "--runtime", "io.containerd.clade.v2", "--annotation", "clade.dev/snapshot=\(Self.snapshot)", Self.image, "long",
            "/bin/sh", "-c", "echo made-while-running > /tmp/state; while true; do sleep 1; done",
        ])
        try #require(run.status == 0, "\(run.stderr)")
        let exec = try containerd.ctr(["task", "exec", "--exec-id", "e1", "long", "/bin/sh", "-c", "cat /tmp/state; echo exec-stderr >&2; exit 4"])
        #expect(exec.status == 4)
        #expect(exec.stdout == "made-while-running\n")
        #expect(exec.stderr.contains("exec-stderr"))
        let piped = try containerd.ctr(["task", "exec", "--exec-id", "e2", "long", "/bin/sh", "-c", "read line; echo got-$line"], stdin: Data("piped\n".utf8))
        #expect(piped.stdout == "got-piped\n", "stdin reaches an exec: \(piped.stderr)")

        // The pid containerd reports is the VMM's.
        let sandboxes = try cli.run(["ls", "--json"])
        let vmm = try #require(cli.qemuProcesses().first)
        #expect(try containerd.ctr(["task", "ps", "long"]).stdout.contains("\(vmm)"), "\(sandboxes.stdout)")
        #expect(try containerd.ctr(["task", "ls"]).stdout.contains("\(vmm)"))

        #expect(try containerd.ctr(["task", "pause", "long"]).status == 0)
        #expect(try containerd.ctr(["task", "ls"]).stdout.contains("PAUSED"))
        #expect(try containerd.ctr(["task", "resume", "long"]).status == 0)
        #expect(try containerd.ctr(["task", "ls"]).stdout.contains("RUNNING"))
        let metrics = try containerd.ctr(["task", "metrics", "long"])
        #expect(metrics.status == 0 && metrics.stdout.contains("memory"), "metrics: \(metrics.stdout) \(metrics.stderr)")

        // A checkpoint is a clade snapshot, which a new pod forks with the state it had.
        let checkpoint = try containerd.ctr(["task", "checkpoint", "long"])
        #expect(checkpoint.status == 0, "checkpoint: \(checkpoint.stderr)")
        #expect(try containerd.ctr(["task", "ls"]).stdout.contains("RUNNING"), "the task runs on after its checkpoint")
        let snapshots = try cli.run(["snapshots", "--json"]).stdout
        let tag = try #require(snapshots.split(separator: "\"").first { $0.hasPrefix("ctr-checkpoint-long-") }.map(String.init), "\(snapshots)")
        let fromCheckpoint = try containerd.run(Self.image, "restored", options: ["--annotation", "clade.dev/snapshot=\(tag)"], ["/bin/sh", "-c", "cat /tmp/state"])
        #expect(fromCheckpoint.stdout == "made-while-running\n", "\(fromCheckpoint.stderr)")
        _ = try cli.run(["rmi", tag])

        #expect(try containerd.ctr(["task", "kill", "long"]).status == 0)
        let stopped = try ContainerdProcess.waitFor { try self.containerd.ctr(["task", "ls"]).stdout.contains("STOPPED") }
        #expect(stopped, "SIGTERM stops the task")
        #expect(try containerd.ctr(["task", "kill", "-s", "KILL", "long"]).status == 0, "killing a stopped task succeeds")
        #expect(try containerd.ctr(["task", "delete", "long"]).status == 0)
        #expect(try containerd.ctr(["containers", "rm", "long"]).status == 0)
        try ContainerdProcess.waitFor { self.containerd.shims().isEmpty }
        expectNothingLeft("exec, kill and delete")
    }

    @Test func aPodForksABakedSnapshotAndSeesItsState() throws {
        let forked = try containerd.run(Self.image, "forked", options: ["--annotation", "clade.dev/snapshot=\(Self.snapshot)"], ["/bin/sh", "-c", "cat /etc/baked; hostname; ulimit -Sn; ulimit -Hn"])
        #expect(forked.status == 0, "\(forked.stderr)")
        let lines = forked.stdout.split(separator: "\n")
        #expect(lines.first == "baked-into-the-snapshot")
        #expect(lines.count == 4 && lines[1].count == 12, "a fork gets its own hostname, its sandbox id: \(forked.stdout)")
        // containerd's default spec gives every container RLIMIT_NOFILE 1024/1024; the guest's
        // own hard limit is 4096.
        #expect(lines.suffix(2) == ["1024", "1024"], "the spec's rlimits apply in the guest: \(forked.stdout)")
        expectNothingLeft("a forked container")
    }

    @Test func aPodForksASnapshotFromARegistryReferencePulledOncePerNode() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let reference = "\(registry.address)/snapshots/ctd:1"
        let pushed = try cli.run(["push", Self.snapshot, reference, "--insecure"])
        try #require(pushed.status == 0, "push: \(pushed.stderr)")
        func nodeCopies() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: cli.home.appendingPathComponent("snapshots").path)) ?? []).filter { $0.hasPrefix("node-") }
        }
        #expect(nodeCopies().isEmpty)
        for name in ["pulled", "cached"] {
            let run = try containerd.run(Self.image, name, options: ["--annotation", "clade.dev/snapshot=\(reference)"], ["/bin/cat", "/etc/baked"])
            #expect(run.status == 0 && run.stdout == "baked-into-the-snapshot\n", "\(name): \(run.stdout) \(run.stderr)")
            #expect(nodeCopies().count == 1, "the node keeps one copy of the pulled snapshot: \(nodeCopies())")
            if name == "pulled" {
                // Pulled lazily: its memory had a FUSE server of its own, which stays a few
                // seconds after its last user (10 s of idle grace).
                let servers = (try? FileManager.default.contentsOfDirectory(atPath: cli.home.appendingPathComponent("lazy").path)) ?? []
                #expect(!servers.isEmpty, "the shim pulled the reference whole, not lazily")
            }
        }
        expectNothingLeft("pods forked from a registry reference")
    }

    @Test func aContainerRunsOnItsOwnImageInsideAForkedVMWhenAsked() throws {
        let options = ["--annotation", "clade.dev/snapshot=\(Self.snapshot)", "--annotation", "clade.dev/container-root=image"]
        let started = Date()
        let run = try containerd.ctr(["run", "-d", "--runtime", "io.containerd.clade.v2"] + options + [Self.image, "own", "/bin/sh", "-c", "sleep 1000"])
        try #require(run.status == 0, "\(run.stderr)")
        let seconds = Date().timeIntervalSince(started)
        print("ContainerdShimTests: a container on its own image (busybox, ~1 MB) started in \(String(format: "%.2f", seconds)) s")
        // The image's files, not the snapshot's: /etc/origin is only in the OCI image, /etc/baked only in the VM.
        let inside = try containerd.ctr(["task", "exec", "--exec-id", "look", "own", "/bin/sh", "-c", "cat /etc/origin; test -e /etc/baked && echo vm-root-visible; echo /bin/*; cat /proc/1/comm >/dev/null && echo proc"])
        #expect(inside.stdout == "from-the-oci-image\n/bin/busybox /bin/cat /bin/echo /bin/hostname /bin/ls /bin/sh /bin/sleep /bin/true /bin/tty\nproc\n", "\(inside.stdout) \(inside.stderr)")
        #expect(try containerd.ctr(["task", "kill", "-s", "KILL", "own"]).status == 0)
        try ContainerdProcess.waitFor { (try? self.containerd.ctr(["task", "ls"]).stdout.contains("STOPPED")) == true }
        #expect(try containerd.ctr(["task", "delete", "own"]).status == 0)
        #expect(try containerd.ctr(["containers", "rm", "own"]).status == 0)
        try ContainerdProcess.waitFor { self.containerd.shims().isEmpty }
        expectNothingLeft("a container on its own image")

        let bogus = try containerd.run(Self.image, "bogus", options: ["--annotation", "clade.dev/container-root=elsewhere"], ["/bin/true"])
        #expect(bogus.status != 0)
        #expect(bogus.stderr.contains("use 'image'"), "\(bogus.stderr)")
    }

    @Test func badAnnotationsAreRefusedAndLeaveNothing() throws {
        let unknown = try containerd.run(Self.image, "unknown", options: ["--annotation", "clade.dev/snapshot=no-such-snapshot"], ["/bin/sh", "-c", "true"])
        #expect(unknown.status != 0)
        #expect(unknown.stderr.contains("no snapshot named 'no-such-snapshot'"), "\(unknown.stderr)")
        let malformed = try containerd.run(Self.image, "malformed", options: ["--annotation", "clade.dev/snapshot=x y"], ["/bin/sh", "-c", "true"])
        #expect(malformed.status != 0)
        #expect(malformed.stderr.contains("neither a snapshot tag nor a registry reference"), "\(malformed.stderr)")
        let badReference = try containerd.run(Self.image, "badref", options: ["--annotation", "clade.dev/snapshot=../x y"], ["/bin/sh", "-c", "true"])
        #expect(badReference.status != 0)
        #expect(badReference.stderr.contains("is not a registry reference"), "\(badReference.stderr)")
        let registry = try containerd.run(Self.image, "registry", options: ["--annotation", "clade.dev/snapshot=127.0.0.1:9/none/x:1"], ["/bin/sh", "-c", "true"])
        #expect(registry.status != 0)
        #expect(registry.stderr.contains("cannot pull snapshot"), "\(registry.stderr)")
        #expect(try containerd.ctr(["containers", "ls", "-q"]).stdout.isEmpty)
        try ContainerdProcess.waitFor { self.containerd.shims().isEmpty }
        expectNothingLeft("refused containers")
    }

    @Test func aShimKilledMidPodLeavesNoVM() throws {
        let run = try containerd.ctr([
            "run", "-d", "--runtime", "io.containerd.clade.v2", "--annotation", "clade.dev/snapshot=\(Self.snapshot)", Self.image, "doomed",
            "/bin/sh", "-c", "sleep 1000",
        ])
        try #require(run.status == 0, "\(run.stderr)")
        #expect(cli.qemuProcesses().count == 1)
        let shims = containerd.shims()
        try #require(shims.count == 1)
        kill(shims[0], SIGKILL)
        let gone = try ContainerdProcess.waitFor { !(try self.containerd.ctr(["task", "ls"]).stdout.contains("doomed")) }
        #expect(gone, "containerd reports the task gone")
        try ContainerdProcess.waitFor { self.cli.qemuProcesses().isEmpty }
        // containerd cleans up after a dead shim by running the shim binary's `delete`, which may
        // still be finishing (it stops the VM first, then removes the sandbox) when the task is gone.
        try ContainerdProcess.waitFor { self.containerd.shims().isEmpty }
        #expect(try containerd.ctr(["containers", "rm", "doomed"]).status == 0)
        expectNothingLeft("a killed shim")
    }
}
