import CladeStore
import Foundation
import Testing

/// Lazy forks from a registry, with real VMs, a real registry and two stores: children start in an
/// empty store before the snapshot's memory has arrived, siblings fetch each chunk once, the
/// background fill completes the snapshot byte for byte, and a chunk the registry corrupted is
/// never served.
extension PackTransferTests {
    /// The lazily pulled snapshot's server directory in `home`, by the snapshot's id.
    func lazyDirectory(_ home: URL, tag: String) throws -> URL {
        let data = try Data(contentsOf: home.appendingPathComponent("snapshots/\(tag)/snapshot.json"))
        let id = try #require((try JSONSerialization.jsonObject(with: data) as? [String: Any])?["id"] as? String)
        return home.appendingPathComponent("lazy/\(id)")
    }

    func statistics(_ directory: URL) -> [String: Any] {
        guard let data = try? Data(contentsOf: directory.appendingPathComponent("stats.json")) else { return [:] }
        return (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
    }

    func mounted(_ path: URL) -> Bool {
        ((try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? "").contains(" \(path.path) ")
    }

    /// Bakes the shared snapshot `first` (once per run) and pushes it to `repository` in
    /// `registry`; returns the reference.
    func pushedFirst(_ registry: TestRegistry, repository: String) throws -> String {
        try bake(Self.source, "first")
        let reference = "\(registry.address)/\(repository):first"
        let pushed = try Self.source.run(["push", "first", reference, "--insecure"])
        try #require(pushed.status == 0, "push to \(reference): \(pushed.stderr)")
        return reference
    }

    /// Polls `condition` every 100 ms until it holds or `seconds` pass.
    func eventually(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return condition()
    }

    @Test func childrenStartInAnEmptyStoreBeforeTheMemoryArrivesAndTheFillCompletesIt() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        try bake(Self.source, "first")
        let reference = "\(registry.address)/clade/lazy:first"
        // The working set a fresh fork touches travels with the pack and is prefetched.
        let recorded = try Self.source.run(["record-working-set", "first", "--json"])
        try #require(recorded.status == 0, "record-working-set failed: \(recorded.stderr)")
        let recordedChunks = (try? JSONSerialization.jsonObject(with: Data(recorded.stdout.utf8)) as? [String: Any])?["chunks"] as? Int ?? 0
        #expect(recordedChunks > 0, "\(recorded.stdout)")
        try #require(try Self.source.run(["push", "first", reference, "--insecure"]).status == 0)

        let receiver = CLIHarness(home: CLIHarness.privateHome("lazy-receiver"), environment: ["CLADE_LAZY_IDLE_SECONDS": "1"])
        // The fill is held until the children run: this small guest's working set is all of its
        // memory, so a free fill could otherwise complete it before they start.
        var holding = receiver
        holding.environment["CLADE_LAZY_FILL"] = "held"
        let fork = try holding.run(["fork", reference, "-n", "2", "--insecure", "--json"])
        try #require(fork.status == 0, "lazy fork failed: \(fork.stderr)")
        let children = fork.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(children.count == 2 && children.allSatisfy { $0["memory"] as? String == "lazy-fetch" && $0["error"] == nil }, "\(fork.stdout)")
        let ids = children.compactMap { $0["id"] as? String }
        let lazy = try lazyDirectory(receiver.home, tag: "first")
        #expect(mounted(lazy.appendingPathComponent("mnt")), "the FUSE server is not mounted at \(lazy.path)/mnt")
        // The children started after the prefetch, which pushed every working-set chunk the pack
        // holds into the page cache.
        let prefetched = statistics(lazy)
        #expect(prefetched["prefetchDone"] as? Bool == true && (prefetched["prefetchChunks"] as? Int ?? 0) > 0, "\(prefetched)")
        #expect(prefetched["prefetchedChunks"] as? Int == prefetched["prefetchChunks"] as? Int, "not every prefetched chunk reached the page cache: \(prefetched)")
        #expect(FileManager.default.fileExists(atPath: receiver.home.appendingPathComponent("snapshots/first/working-set.json").path), "the pulled snapshot lost its working set")
        for id in ids {
            let read = try receiver.run(["exec", id, "--", "cat", "/root/sentinel"])
            #expect(read.stdout == "packed-sentinel\n", "lazy child \(id): \(read.stderr)")
        }

        // Let go (SIGUSR1, as a pull does), the fill completes the snapshot: the memory file
        // becomes the source's, byte for byte, and every chunk was fetched once, whichever
        // sibling touched it first.
        // The rootfs has a server of its own, held too.
        let servers = try FileManager.default.contentsOfDirectory(atPath: receiver.home.appendingPathComponent("lazy").path)
        #expect(servers.contains { $0.hasPrefix("rootfs-") }, "the rootfs was not left to a lazy server: \(servers)")
        for name in servers {
            let pidFile = receiver.home.appendingPathComponent("lazy/\(name)/server.pid")
            if let pid = Int32((try? String(contentsOf: pidFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") { kill(pid, SIGUSR1) }
        }
        let memory = receiver.home.appendingPathComponent("snapshots/first/memory")
        #expect(eventually(180) { (try? FileSystem.status(of: memory))?.isRegularFile == true }, "the background fill never completed: \(statistics(lazy))")
        let stats = statistics(lazy)
        // Chunks with the same bytes at two offsets share one digest: the second is taken from the
        // store, where the first was kept.
        let fetches = stats["fetches"] as? Int ?? 0
        let reused = stats["reusedChunks"] as? Int ?? 0
        #expect(stats["complete"] as? Bool == true && fetches + reused == stats["chunks"] as? Int, "\(stats)")
        let compare = try ExternalCommand("cmp", [Self.source.home.appendingPathComponent("snapshots/first/memory").path, memory.path]).run()
        #expect(compare.status == 0, "the assembled memory differs from the source's: \(compare.stdout)")
        #expect(!FileManager.default.fileExists(atPath: receiver.home.appendingPathComponent("snapshots/first/lazy-memory.json").path))
        let rootfsName = try #require(servers.first { $0.hasPrefix("rootfs-") }?.dropFirst(7))
        let rootfs = receiver.home.appendingPathComponent("blobs/sha256/\(rootfsName)")
        #expect(eventually(60) { (try? FileSystem.status(of: rootfs))?.isRegularFile == true }, "the rootfs fill never completed")
        #expect(try ExternalCommand("cmp", [Self.source.home.appendingPathComponent("blobs/sha256/\(rootfsName)").path, rootfs.path]).run().status == 0)

        // Later forks map the store's own file; the running lazy children are unharmed.
        let later = try receiver.run(["fork", "first", "--json"])
        try #require(later.status == 0, "fork after the fill failed: \(later.stderr)")
        #expect(later.stdout.contains("\"memory\":\"hardlink\""), "\(later.stdout)")
        for id in ids {
            #expect(try receiver.run(["exec", id, "--", "true"]).status == 0, "lazy child \(id) died after the fill")
        }

        // With nothing left mapping it, the server unmounts and leaves no files behind.
        let laterID = (try JSONSerialization.jsonObject(with: Data(later.stdout.utf8)) as? [String: Any])?["id"] as? String
        for id in ids + [laterID].compactMap({ $0 }) { #expect(try receiver.run(["kill", id]).status == 0) }
        #expect(eventually(30) { !mounted(lazy.appendingPathComponent("mnt")) }, "the lazy mount outlived its last user")
        #expect(eventually(10) { !FileManager.default.fileExists(atPath: lazy.path) }, "the server left \(lazy.path) behind")
        let pull = try receiver.run(["pull", reference, "--insecure", "--json"])
        let upToDate = (try? JSONSerialization.jsonObject(with: Data(pull.stdout.utf8)) as? [String: Any])?["up_to_date"] as? Bool
        #expect(pull.status == 0 && upToDate == true, "a pull after the fill: \(pull.stdout) \(pull.stderr)")
        // The verified chunks stayed in the store: a whole pull of the same pack under another
        // tag takes its memory from there, not from the registry.
        let again = try receiver.run(["pull", reference, "--tag", "again", "--insecure", "--json"])
        let report = (try? JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as? [String: Any]) ?? [:]
        let downloaded = report["downloaded"] as? [String: Int] ?? [:]
        #expect(again.status == 0 && downloaded["memory"] == nil && !downloaded.isEmpty, "a second pull fetched memory the store kept: \(again.stdout) \(again.stderr)")
        let reassembled = try ExternalCommand("cmp", [memory.path, receiver.home.appendingPathComponent("snapshots/again/memory").path]).run()
        #expect(reassembled.status == 0, "the memory assembled from kept chunks differs: \(reassembled.stdout)")
    }

    @Test func aChunkTheRegistryCorruptedIsNeverServed() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let reference = try pushedFirst(registry, repository: "clade/corrupt")
        // Corrupt one memory chunk in the registry's storage; the registry serves it as it is.
        let layout = FileManager.default.temporaryDirectory.appendingPathComponent("clade-lazy-layout-\(getpid())")
        defer { try? FileManager.default.removeItem(at: layout) }
        try #require(try Self.source.run(["pack", "first", "-o", layout.path]).status == 0)
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: layout.appendingPathComponent("index.json"))) as? [String: Any]
        let manifestDigest = try #require(((index?["manifests"] as? [[String: Any]])?.first?["digest"] as? String)?.replacingOccurrences(of: "sha256:", with: ""))
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: layout.appendingPathComponent("blobs/sha256/\(manifestDigest)"))) as? [String: Any]
        let chunks = (manifest?["layers"] as? [[String: Any]] ?? []).filter { ($0["mediaType"] as? String)?.contains("memory") == true }
        let victim = try #require(chunks.last)
        let victimDigest = try #require((victim["digest"] as? String)?.replacingOccurrences(of: "sha256:", with: ""))
        let victimOffset = try #require(Int((victim["annotations"] as? [String: String])?["org.clade.memory.offset"] ?? ""))
        let stored = registry.root.appendingPathComponent("data/docker/registry/v2/blobs/sha256/\(victimDigest.prefix(2))/\(victimDigest)/data")
        var bytes = try Data(contentsOf: stored)
        bytes[bytes.count / 2] ^= 0xff
        try bytes.write(to: stored)

        let receiver = CLIHarness(home: CLIHarness.privateHome("lazy-corrupt"), environment: ["CLADE_LAZY_IDLE_SECONDS": "1"])
        let pull = try receiver.run(["pull", "--lazy", reference, "--insecure"])
        try #require(pull.status == 0, "lazy pull failed: \(pull.stderr)")
        // A snapshot whose memory is still in the registry cannot be packed, and the refusal
        // comes before any blob is written.
        let refusedLayout = layout.appendingPathExtension("refused")
        let refusedPack = try receiver.run(["pack", "first", "-o", refusedLayout.path])
        #expect(refusedPack.status != 0 && refusedPack.stderr.contains("still arriving"), "pack of a lazy snapshot: \(refusedPack.stderr)")
        #expect(!FileManager.default.fileExists(atPath: refusedLayout.path), "a refused pack wrote \(refusedLayout.path)")
        // The guest may touch the bad chunk while it restores: then its VM stops, and the fork
        // says why; either way the server is still retrying the chunk when the fork returns.
        let fork = try receiver.run(["fork", "first", "--json"])
        let forkError = (try? JSONSerialization.jsonObject(with: Data(fork.stdout.utf8)) as? [String: Any])?["error"] as? String
        if let forkError { #expect(forkError.contains("could not be fetched lazily") && forkError.contains("digest"), "\(forkError)") }
        let lazy = try lazyDirectory(receiver.home, tag: "first")
        try #require(mounted(lazy.appendingPathComponent("mnt")), "the server left before the test could read through it: \(fork.stdout) \(fork.stderr)")
        let served = lazy.appendingPathComponent("mnt/memory")
        // Reading the bad chunk through the server fails; its bytes never reach a reader.
        let read = try ExternalCommand("dd", ["if=\(served.path)", "of=/dev/null", "bs=4096", "count=1", "skip=\(victimOffset / 4096)"]).run()
        #expect(read.status != 0 && read.stderr.contains("Input/output error"), "reading the corrupted chunk: \(read.stderr)")
        let failure = (try? String(contentsOf: lazy.appendingPathComponent("failure"), encoding: .utf8)) ?? ""
        #expect(failure.contains("offset \(victimOffset)") && failure.contains("digest"), "failure: \(failure)")
        #expect(try FileSystem.status(of: receiver.home.appendingPathComponent("snapshots/first/memory"))?.isSymbolicLink == true, "an incomplete snapshot was sealed")
        if let id = (try? JSONSerialization.jsonObject(with: Data(fork.stdout.utf8)) as? [String: Any])?["id"] as? String {
            _ = try receiver.run(["kill", id])
        }
        #expect(eventually(60) { !mounted(lazy.appendingPathComponent("mnt")) }, "the lazy mount outlived its last user")
        // Once the registry holds the right bytes, a pull completes the snapshot.
        try Data(contentsOf: layout.appendingPathComponent("blobs/sha256/\(victimDigest)")).write(to: stored)
        let repaired = try receiver.run(["pull", "--force", reference, "--insecure"])
        #expect(repaired.status == 0, "pull after repair: \(repaired.stderr)")
        #expect(try FileSystem.status(of: receiver.home.appendingPathComponent("snapshots/first/memory"))?.isRegularFile == true)
    }

    /// The registry dies while a lazy child runs with part of its memory still in it: the child
    /// that needs a missing chunk is stopped and says why, another sandbox runs on, the store
    /// stays whole, and once the registry is back a plain pull completes the snapshot.
    @Test func aRegistryLostMidRunStopsOnlyTheSandboxThatNeededTheMissingMemory() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let reference = try pushedFirst(registry, repository: "clade/lost")

        let receiver = CLIHarness(home: CLIHarness.privateHome("lazy-lost"), environment: ["CLADE_LAZY_IDLE_SECONDS": "1"])
        // A bystander whose memory is whole: the same snapshot pulled eagerly under another tag.
        try #require(try receiver.run(["pull", reference, "--tag", "whole", "--insecure"]).status == 0)
        let bystander = try receiver.run(["fork", "whole", "--json"])
        let bystanderID = try #require((try? JSONSerialization.jsonObject(with: Data(bystander.stdout.utf8)) as? [String: Any])?["id"] as? String, "\(bystander.stderr)")
        // The fill is held, so the chunks the guest has not touched stay in the registry.
        var holding = receiver
        holding.environment["CLADE_LAZY_FILL"] = "held"
        // No prefetch either: the working set, if one was recorded, would fetch every chunk.
        let fork = try holding.run(["fork", reference, "--insecure", "--no-prefetch", "--json"])
        let id = try #require((try? JSONSerialization.jsonObject(with: Data(fork.stdout.utf8)) as? [String: Any])?["id"] as? String, "lazy fork failed: \(fork.stderr)")
        #expect(try receiver.run(["exec", id, "--", "true"]).status == 0)
        let lazy = try lazyDirectory(receiver.home, tag: "first")
        let before = statistics(lazy)
        try #require((before["chunksPresent"] as? Int ?? 0) < (before["chunks"] as? Int ?? 0), "every chunk arrived although the fill was held: \(before)")

        // A fresh fork keeps touching memory for a moment after its first answer (its agent's
        // follow-up work): the registry goes only once the guest has settled, so what it needs
        // next is what this test makes it need.
        var last = -1, stableSince = Date()
        let settled = eventually(30) {
            let now = statistics(lazy)["demandFetches"] as? Int ?? 0
            if now != last { (last, stableSince) = (now, Date()) }
            return Date().timeIntervalSince(stableSince) >= 3
        }
        #expect(settled, "the lazy child kept fetching memory: \(statistics(lazy))")
        registry.halt()
        // A branch reads all of its guest's memory, so it has the rest fetched before it touches
        // the guest: that fails and says why, and the guest, never held, runs on.
        // The guest's vCPUs are stopped meanwhile: a running guest may need a missing chunk of its
        // own accord at any moment (and is then rightly stopped); this checks the branch alone.
        // Through QEMU's monitor, not SIGSTOP: a stopped VM's clock stops too, so the guest sees
        // no jump in time when it goes on (a jump sent one through memory it had not touched).
        try receiver.qmp(id, [["execute": "stop"]])
        let branch = try receiver.run(["branch", id, "--tag", "lost-branch", "--mode", "full", "--json"], timeout: 120)
        #expect(branch.status != 0 && branch.stderr.contains("could not be fetched lazily") && branch.stderr.contains("keeps running"), "\(branch.stdout) \(branch.stderr)")
        // Whether the branch left the sandbox alone is checked while the guest is still held: once
        // it goes on, anything it runs (even `true`: the kernel hands out free pages nobody has
        // touched since the restore) may need a chunk the registry can no longer give.
        let held = try receiver.qmp(id, [["execute": "query-status"]]).stdout
        #expect(held.contains("\"status\": \"paused\""), "a failed branch changed its sandbox's VM: \(held)")
        let listed = (try? JSONSerialization.jsonObject(with: Data(try receiver.run(["ls", "--json"]).stdout.utf8)) as? [[String: Any]]) ?? []
        #expect(listed.contains { $0["id"] as? String == id && $0["state"] as? String == "running" }, "a failed branch stopped its sandbox: \(listed)")
        #expect(try receiver.run(["snapshot-info", "lost-branch"]).status != 0, "a failed branch left a snapshot")
        try receiver.qmp(id, [["execute": "cont"]])
        // The kernel's BTF sits in guest memory that nothing touches after a restore: reading
        // it faults on a chunk nobody can fetch now, so the VM is stopped and the sandbox says why
        // (as "stopped while the command ran", or, if the guest needed a missing chunk of its own
        // accord first, as the cause of its death).
        let touched = try receiver.run(["exec", id, "--", "sh", "-c", "cat /sys/kernel/btf/vmlinux > /dev/null"], timeout: 120)
        #expect(
            touched.status != 0 && (touched.stderr.contains("stopped while the command ran") || touched.stderr.contains("is dead (part of its snapshot"))
                && touched.stderr.contains("could not be fetched lazily") && touched.stderr.contains(registry.address), "the command whose guest lost its memory: \(touched.stderr)")
        let rows = (try? JSONSerialization.jsonObject(with: Data(try receiver.run(["ls", "--json"]).stdout.utf8)) as? [[String: Any]]) ?? []
        #expect(!rows.contains { $0["id"] as? String == id && $0["state"] as? String == "running" }, "the child that lost its memory still runs: \(rows)")
        #expect(try receiver.run(["exec", bystanderID, "--", "true"]).status == 0, "another sandbox died with the registry")
        try expectBlobsIntact(receiver.home)

        try registry.resume()
        let pull = try receiver.run(["pull", reference, "--insecure", "--json"], timeout: 240)
        let report = (try? JSONSerialization.jsonObject(with: Data(pull.stdout.utf8)) as? [String: Any]) ?? [:]
        #expect(pull.status == 0 && report["completed_lazy_memory"] as? Bool == true, "a pull after the registry came back: \(pull.stdout) \(pull.stderr)")
        let memory = receiver.home.appendingPathComponent("snapshots/first/memory")
        #expect(try FileSystem.status(of: memory)?.isRegularFile == true, "the pull returned before the memory was whole")
        let compare = try ExternalCommand("cmp", [Self.source.home.appendingPathComponent("snapshots/first/memory").path, memory.path]).run()
        #expect(compare.status == 0, "the completed memory differs from the source's: \(compare.stdout)")
        _ = try receiver.run(["kill", bystanderID])
        #expect(eventually(30) { !mounted(lazy.appendingPathComponent("mnt")) }, "the lazy mount outlived its last user")
    }

    /// The daemon's `POST /v1/sandboxes` takes a registry reference where a tag goes: the
    /// snapshot is pulled lazily under a tag derived from the reference, once, and the child
    /// answers before the memory has arrived.
    @Test func theDaemonForksARegistryReferenceLazily() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let reference = try pushedFirst(registry, repository: "clade/api")
        let receiver = CLIHarness(
            home: CLIHarness.privateHome("lazy-api"), environment: ["CLADE_LAZY_IDLE_SECONDS": "1", "CLADE_INSECURE_REGISTRIES": registry.address])
        let daemon = DaemonProcess(receiver)
        try daemon.start()
        defer { daemon.stop() }
        let body = #"{"snapshot_tag": "\#(reference)", "n": 1}"#
        let spawn = try ExternalCommand("curl", [
            "-s", "-w", "\n%{http_code}", "-X", "POST", "-H", "Authorization: Bearer \(daemon.token)", "-H", "Content-Type: application/json",
            "-d", body, "http://127.0.0.1:\(daemon.port)/v1/sandboxes",
        ]).run()
        let lines = spawn.stdout.split(separator: "\n")
        #expect(lines.last == "201", "spawn from a registry reference: \(spawn.stdout)")
        let children = (try? JSONSerialization.jsonObject(with: Data((lines.first ?? "").utf8)) as? [[String: Any]]) ?? []
        let id = try #require(children.first?["id"] as? String, "\(spawn.stdout)")
        let tag = children.first?["snapshot_tag"] as? String ?? children.first?["snapshot"] as? String ?? ""
        #expect(tag.hasPrefix("node-"), "the child's snapshot: \(children)")
        let snapshots = (try? FileManager.default.contentsOfDirectory(atPath: receiver.home.appendingPathComponent("snapshots").path)) ?? []
        let pulled = try #require(snapshots.first { $0.hasPrefix("node-") }, "no node copy in \(snapshots)")
        #expect(FileManager.default.fileExists(atPath: try lazyDirectory(receiver.home, tag: pulled).path), "the daemon pulled the reference whole, not lazily")
        let read = try receiver.run(["exec", id, "--", "cat", "/root/sentinel"])
        #expect(read.stdout == "packed-sentinel\n", "\(read.stderr)")

        // A server that dies (here, killed) cannot be replaced under a running guest's mapping:
        // its sandbox is stopped and says why, and gc removes what the server left.
        let lazy = try lazyDirectory(receiver.home, tag: pulled)
        let serverPid = try #require(Int32((try? String(contentsOf: lazy.appendingPathComponent("server.pid"), encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""))
        // A server that hangs (here, stopped) must not hang a look at the sandboxes: liveness
        // comes from the mount table and the process, never from a request to the mount.
        kill(serverPid, SIGSTOP)
        let look = try receiver.run(["ls", "--json"], timeout: 30)
        #expect(look.status == 0 && look.stdout.contains(id), "clade ls beside a stopped lazy server: \(look.stderr)")
        kill(serverPid, SIGKILL)
        // Its mount stops answering once the process is gone, not when the signal is sent.
        #expect(eventually(10) { !FileManager.default.fileExists(atPath: "/proc/\(serverPid)") }, "the killed server \(serverPid) lingers")
        let rows = (try? JSONSerialization.jsonObject(with: Data(try receiver.run(["ls", "--json"]).stdout.utf8)) as? [[String: Any]]) ?? []
        let row = rows.first { $0["id"] as? String == id }
        #expect(row?["state"] as? String == "dead" && (row?["death_cause"] as? String ?? "").contains("FUSE server that served its memory lazily stopped"), "\(row ?? [:])")
        let gc = try receiver.run(["gc", "--json"])
        #expect(gc.status == 0 && gc.stdout.contains("lazy/"), "gc after a dead server: \(gc.stdout) \(gc.stderr)")
        #expect(!FileManager.default.fileExists(atPath: lazy.path) && !mounted(lazy.appendingPathComponent("mnt")), "gc left the dead server's directory or mount")
        // The next fork works: through a new server while the snapshot is lazy, else its own file.
        let again = try receiver.run(["fork", pulled, "--json"])
        let againID = try #require((try? JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as? [String: Any])?["id"] as? String, "fork after gc: \(again.stderr)")
        #expect(try receiver.run(["exec", againID, "--", "cat", "/root/sentinel"]).stdout == "packed-sentinel\n")
        #expect(try receiver.run(["kill", againID]).status == 0)
    }
}
