import CladeStore
import Foundation
import Testing

/// Packs with real VMs: a snapshot baked in one store forks in another at a different path,
/// through a tar, a real registry (docker-registry), and skopeo; interrupted unpacks and pulls
/// resume; shared base content moves once.
@Suite(.serialized) struct PackTransferTests {
    static let source = CLIHarness(home: CLIHarness.privateHome("pack-source"))
    static let sentinel = "echo packed-sentinel > /root/sentinel; sync"

    func bake(_ cli: CLIHarness, _ tag: String) throws {
        if FileManager.default.fileExists(atPath: cli.home.appendingPathComponent("snapshots/\(tag)/snapshot.json").path) { return }
        let result = try cli.run(["bake", "--tag", tag, "--warm", Self.sentinel])
        try #require(result.status == 0, "bake failed: \(result.stderr)")
    }

    func json(_ result: CLIHarness.Result) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "not JSON: \(result.stdout) \(result.stderr)")
    }

    /// Forks `count` children of `tag` in `cli`'s store, checks each sees the sentinel, kills them.
    func forkAndCheckSentinel(_ cli: CLIHarness, _ tag: String, count: Int) throws {
        let fork = try cli.run(["fork", tag, "-n", "\(count)", "--json"])
        try #require(fork.status == 0, "fork failed: \(fork.stderr)")
        let ids = fork.stdout.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["id"] as? String
        }
        #expect(ids.count == count)
        for id in ids {
            let read = try cli.run(["exec", id, "--", "cat", "/root/sentinel"])
            #expect(read.stdout == "packed-sentinel\n", "child \(id) of \(tag): \(read.stderr)")
            #expect(try cli.run(["kill", id]).status == 0)
        }
    }

    /// Every blob in the store hashes to its name: no partial blob ever sits under a digest.
    func expectBlobsIntact(_ home: URL) throws {
        let blobs = home.appendingPathComponent("blobs/sha256")
        for name in (try? FileManager.default.contentsOfDirectory(atPath: blobs.path)) ?? [] {
            #expect(!name.hasPrefix("."), "a temporary file \(name) sits among the blobs")
            let digest = try Digest.ofFile(at: blobs.appendingPathComponent(name)).digest
            #expect(digest.hex == name, "blob \(name) holds \(digest)")
        }
    }

    @Test func aSnapshotForksInAnEmptyStoreAtAnotherPathAfterTheSourceIsGone() throws {
        let origin = CLIHarness(home: CLIHarness.privateHome("pack-origin"))
        try bake(origin, "portable")
        let tar = FileManager.default.temporaryDirectory.appendingPathComponent("clade-portable-\(getpid()).tar")
        defer { try? FileManager.default.removeItem(at: tar) }
        let pack = try origin.run(["pack", "portable", "-o", tar.path, "--json"])
        try #require(pack.status == 0, "pack failed: \(pack.stderr)")
        let pieces = try json(pack)["pieces"] as? [[String: Any]] ?? []
        #expect(Set(pieces.compactMap { $0["kind"] as? String }) == ["kernel", "initrd", "rootfs", "disk-layer", "device-state", "memory", "config"])
        try FileManager.default.removeItem(at: origin.home)

        let target = CLIHarness(home: CLIHarness.privateHome("pack-target"))
        let unpack = try target.run(["unpack", tar.path])
        try #require(unpack.status == 0, "unpack failed: \(unpack.stderr)")
        try forkAndCheckSentinel(target, "portable", count: 2)
        let grep = try ExternalCommand("grep", ["-r", "-l", origin.home.path, target.home.appendingPathComponent("snapshots").path, target.home.appendingPathComponent("sandboxes").path]).run()
        #expect(grep.stdout.isEmpty, "files in the new store name the old store's path: \(grep.stdout)")
        try expectBlobsIntact(target.home)
    }

    @Test func aRegistryStoresSharedBaseContentOnceAndPullFetchesOnlyWhatIsMissing() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        try bake(Self.source, "first")
        try bake(Self.source, "second")
        let repository = "\(registry.address)/clade/snapshots"

        let firstPush = try json(try Self.source.run(["push", "first", "\(repository):first", "--insecure", "--json"]))
        let firstUploaded = firstPush["uploaded"] as? [String: Int] ?? [:]
        #expect((firstUploaded["rootfs"] ?? 0) > 0 && (firstUploaded["kernel"] ?? 0) > 0 && (firstUploaded["initrd"] ?? 0) > 0)
        let secondPush = try json(try Self.source.run(["push", "second", "\(repository):second", "--insecure", "--json"]))
        let secondUploaded = secondPush["uploaded"] as? [String: Int] ?? [:]
        for kind in ["rootfs", "kernel", "initrd"] {
            #expect(secondUploaded[kind] == nil, "the second push uploaded \(secondUploaded[kind] ?? 0) \(kind) bytes")
        }
        #expect((secondUploaded["memory"] ?? 0) > 0)
        let again = try json(try Self.source.run(["push", "second", "\(repository):second", "--insecure", "--json"]))
        #expect((again["uploaded"] as? [String: Int] ?? [:]).isEmpty, "a repeated push uploads nothing")

        let receiver = CLIHarness(home: CLIHarness.privateHome("pack-receiver"))
        let pullFirst = try receiver.run(["pull", "\(repository):first", "--insecure", "--json"])
        try #require(pullFirst.status == 0, "pull failed: \(pullFirst.stderr)")
        let pullSecond = try json(try receiver.run(["pull", "\(repository):second", "--insecure", "--json"]))
        let downloaded = pullSecond["downloaded"] as? [String: Int] ?? [:]
        for kind in ["rootfs", "kernel", "initrd"] {
            #expect(downloaded[kind] == nil, "pulling the second snapshot downloaded \(downloaded[kind] ?? 0) \(kind) bytes")
        }
        #expect((downloaded["memory"] ?? 0) > 0)
        try forkAndCheckSentinel(receiver, "second", count: 1)

        let missing = try receiver.run(["pull", "\(repository):nope", "--insecure"])
        #expect(missing.status != 0 && missing.stderr.contains("does not exist"), "\(missing.stderr)")
    }

    @Test func skopeoReadsTheLayoutAndCopiesItToARegistryThatCladePulls() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        try bake(Self.source, "first")
        let layout = FileManager.default.temporaryDirectory.appendingPathComponent("clade-skopeo-\(getpid())")
        defer { try? FileManager.default.removeItem(at: layout) }
        try #require(try Self.source.run(["pack", "first", "-o", layout.path]).status == 0)

        let inspect = try ExternalCommand("skopeo", ["inspect", "--raw", "oci:\(layout.path):first"]).run()
        try #require(inspect.status == 0, "skopeo inspect failed: \(inspect.stderr)")
        #expect(inspect.stdout.contains("application/vnd.clade.snapshot.v1"))
        let copy = try ExternalCommand("skopeo", [
            "copy", "oci:\(layout.path):first", "docker://\(registry.address)/skopeo/first:v1", "--dest-tls-verify=false",
        ]).run()
        try #require(copy.status == 0, "skopeo copy failed: \(copy.stderr)")

        let receiver = CLIHarness(home: CLIHarness.privateHome("pack-skopeo"))
        let pull = try receiver.run(["pull", "\(registry.address)/skopeo/first:v1", "--insecure"])
        try #require(pull.status == 0, "pull failed: \(pull.stderr)")
        try forkAndCheckSentinel(receiver, "first", count: 1)
    }

    @Test func registryLoginIsRequiredAndChecked() throws {
        let registry = try TestRegistry(username: "tester", password: "secret")
        defer { registry.stop() }
        try bake(Self.source, "first")
        let reference = "\(registry.address)/private/first:v1"
        let anonymous = try Self.source.run(["push", "first", reference, "--insecure"])
        #expect(anonymous.status != 0 && anonymous.stderr.contains("requires a login"), "\(anonymous.stderr)")
        var wrong = Self.source
        wrong.environment = ["CLADE_REGISTRY_USERNAME": "tester", "CLADE_REGISTRY_PASSWORD": "wrong"]
        let refused = try wrong.run(["push", "first", reference, "--insecure"])
        #expect(refused.status != 0 && refused.stderr.contains("refused the credentials"), "\(refused.stderr)")
        var right = Self.source
        right.environment = ["CLADE_REGISTRY_USERNAME": "tester", "CLADE_REGISTRY_PASSWORD": "secret"]
        #expect(try right.run(["push", "first", reference, "--insecure"]).status == 0)
        let receiver = CLIHarness(home: CLIHarness.privateHome("pack-login"), environment: right.environment)
        #expect(try receiver.run(["pull", reference, "--insecure"]).status == 0)
    }

    @Test func interruptedUnpacksAndPullsLeaveNoPartialBlobAndResume() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        try bake(Self.source, "first")
        let layout = FileManager.default.temporaryDirectory.appendingPathComponent("clade-crash-\(getpid())")
        defer { try? FileManager.default.removeItem(at: layout) }
        try #require(try Self.source.run(["pack", "first", "-o", layout.path]).status == 0)

        for point in ["unpack-staged-snapshot", "unpack-verified", "unpack-blobs-placed"] {
            var crashing = CLIHarness(home: CLIHarness.privateHome("crash-\(point)"))
            crashing.environment = ["CLADE_FAULT": point]
            #expect(try crashing.run(["unpack", layout.path]).status == 137, "\(point) did not crash")
            try expectBlobsIntact(crashing.home)
            let list = try crashing.run(["snapshots", "--json"])
            #expect(!list.stdout.contains("\"first\""), "a snapshot appeared before its unpack finished (\(point))")
            crashing.environment = [:]
            let rerun = try crashing.run(["unpack", layout.path])
            #expect(rerun.status == 0, "rerun after \(point): \(rerun.stderr)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: crashing.home.appendingPathComponent("tmp").path).isEmpty, "staging left after \(point)")
            try expectBlobsIntact(crashing.home)
        }

        let reference = "\(registry.address)/crash/first:v1"
        try #require(try Self.source.run(["push", "first", reference, "--insecure"]).status == 0)
        let puller = CLIHarness(home: CLIHarness.privateHome("crash-pull"))
        for point in ["pull-manifests-fetched", "pull-blob-downloaded", "pull-downloads-done", "unpack-blobs-placed"] {
            var crashing = puller
            crashing.environment = ["CLADE_FAULT": point]
            #expect(try crashing.run(["pull", reference, "--insecure"]).status == 137, "\(point) did not crash")
            try expectBlobsIntact(puller.home)
            // The resumable download cache holds only complete, verified blobs too.
            for cache in (try? FileManager.default.contentsOfDirectory(atPath: puller.home.appendingPathComponent("tmp").path)) ?? [] where cache.hasPrefix("pull-") {
                try expectBlobsIntact(puller.home.appendingPathComponent("tmp/\(cache)"))
            }
        }
        let rerun = try puller.run(["pull", reference, "--insecure"])
        #expect(rerun.status == 0, "pull after interruptions: \(rerun.stderr)")
        try forkAndCheckSentinel(puller, "first", count: 1)

        // A pull killed in the middle of a blob (at a byte count, not after a sleep, so it is cut
        // on every machine), into a store that has nothing yet: no partial blob is ever trusted,
        // and the rerun completes.
        var cut = CLIHarness(home: CLIHarness.privateHome("crash-pull-cut"))
        cut.environment = ["CLADE_FAULT": "pull-blob-half-written"]
        #expect(try cut.run(["pull", reference, "--insecure"]).status == 137, "the pull was not cut half-way through a blob")
        try expectBlobsIntact(cut.home)
        let caches = try FileManager.default.contentsOfDirectory(atPath: cut.home.appendingPathComponent("tmp").path).filter { $0.hasPrefix("pull-") }
        #expect(caches.count == 1)
        for cache in caches {
            // The cut blob is a hidden .partial beside the complete, verified ones.
            let cached = cut.home.appendingPathComponent("tmp/\(cache)/blobs/sha256")
            let names = try FileManager.default.contentsOfDirectory(atPath: cached.path)
            #expect(names.contains { $0.hasPrefix(".") && $0.hasSuffix(".partial") }, "no partial blob: \(names)")
            for name in names where !name.hasPrefix(".") {
                #expect(try Digest.ofFile(at: cached.appendingPathComponent(name)).digest.hex == name)
            }
        }
        cut.environment = [:]
        let resumed = try cut.run(["pull", reference, "--insecure"])
        #expect(resumed.status == 0, "pull after a cut: \(resumed.stderr)")
        try expectBlobsIntact(cut.home)

        // Pulling what the tag already holds is a no-op, as container tools do.
        let again = try cut.run(["pull", reference, "--insecure", "--json"])
        #expect(again.status == 0, "\(again.stderr)")
        let report = try json(again)
        #expect(report["up_to_date"] as? Bool == true)
        #expect(report["bytes_downloaded"] as? Int == 0)
        #expect(try cut.run(["pull", reference, "--insecure"]).stdout.contains("already up to date"))
        try forkAndCheckSentinel(cut, "first", count: 1)
    }

    /// A blob download cut half-way resumes from the bytes it kept (an HTTP Range request to the
    /// registry); kept bytes that turn out wrong cost one fresh download, never a bad blob.
    @Test func aCutBlobDownloadResumesWhereItStopped() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        try bake(Self.source, "first")
        let reference = "\(registry.address)/resume/first:v1"
        try #require(try Self.source.run(["push", "first", reference, "--insecure"]).status == 0)
        let layout = FileManager.default.temporaryDirectory.appendingPathComponent("clade-resume-\(getpid())")
        defer { try? FileManager.default.removeItem(at: layout) }
        try #require(try Self.source.run(["pack", "first", "-o", layout.path]).status == 0)

        let whole = CLIHarness(home: CLIHarness.privateHome("resume-whole"))
        let full = try json(try whole.run(["pull", reference, "--insecure", "--json"]))
        let fullBytes = try #require(full["bytes_downloaded"] as? Int)

        // Stop a pull after its manifests, then leave what a cut download would: the first half
        // of the largest blob, and a wrong first half of the second largest.
        var resumer = CLIHarness(home: CLIHarness.privateHome("resume-cut"))
        resumer.environment = ["CLADE_FAULT": "pull-manifests-fetched"]
        #expect(try resumer.run(["pull", reference, "--insecure"]).status == 137)
        resumer.environment = [:]
        let caches = try FileManager.default.contentsOfDirectory(atPath: resumer.home.appendingPathComponent("tmp").path).filter { $0.hasPrefix("pull-") }
        let cacheBlobs = resumer.home.appendingPathComponent("tmp/\(try #require(caches.first))/blobs/sha256")
        let packed = layout.appendingPathComponent("blobs/sha256")
        let bySize = try FileManager.default.contentsOfDirectory(atPath: packed.path).map { name in
            (name, try Data(contentsOf: packed.appendingPathComponent(name)))
        }.sorted { $0.1.count > $1.1.count }
        try #require(bySize.count >= 2 && bySize[1].1.count > 1024)
        let (largest, largestBytes) = bySize[0]
        let kept = largestBytes.count / 2
        try largestBytes.prefix(kept).write(to: cacheBlobs.appendingPathComponent(".\(largest).partial"))
        let (second, secondBytes) = bySize[1]
        try Data(repeating: 0x5A, count: secondBytes.count / 2).write(to: cacheBlobs.appendingPathComponent(".\(second).partial"))

        let resumed = try resumer.run(["pull", reference, "--insecure", "--json"])
        try #require(resumed.status == 0, "resumed pull: \(resumed.stderr)")
        let resumedBytes = try #require(try json(resumed)["bytes_downloaded"] as? Int)
        #expect(resumedBytes == fullBytes - kept, "a fresh pull fetched \(fullBytes) bytes; with \(kept) kept, the resumed one fetched \(resumedBytes)")
        #expect(resumed.stderr.contains("downloading it again from the start"), "the wrong partial is noticed: \(resumed.stderr)")
        try expectBlobsIntact(resumer.home)
        try forkAndCheckSentinel(resumer, "first", count: 1)
    }

    @Test func benchPullReportsEveryArmFromOneRun() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        try bake(Self.source, "first")
        let bench = try Self.source.run(["bench", "pull", "--registry", registry.address, "--insecure", "-n", "1", "--tag", "first", "--json"], timeout: 600)
        try #require(bench.status == 0, "bench pull failed: \(bench.stderr)")
        let report = try json(bench)
        let arms = report["arms"] as? [String: [String: Any]] ?? [:]
        for arm in ["pull_then_fork", "lazy", "lazy_prefetch"] {
            #expect((arms[arm]?["first_answer_s"] as? Double ?? 0) > 0 && (arms[arm]?["bytes_before_first_answer"] as? Int ?? 0) > 0, "\(arm): \(arms[arm] ?? [:])")
        }
        #expect(arms["lazy_prefetch"]?["demand_fetches"] != nil && (report["working_set_chunks"] as? Int ?? 0) > 0, "\(report)")
        let ratios = report["ratios"] as? [String: Double] ?? [:]
        #expect(ratios.count == 2 && ratios.values.allSatisfy { $0 > 0 }, "\(ratios)")
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: Self.source.home.deletingLastPathComponent().path)) ?? []
        #expect(!leftovers.contains { $0.hasPrefix(".clade-benchpull-") }, "bench pull left its stores behind")
    }

    @Test func benchPackReportsEveryRatioFromOneRun() throws {
        let bench = try Self.source.run(["bench", "pack", "--json"], timeout: 600)
        try #require(bench.status == 0, "bench pack failed: \(bench.stderr)")
        let report = try json(bench)
        let ratios = report["ratios"] as? [String: Double] ?? [:]
        for key in ["memory_compression", "pack_throughput_vs_tar_zstd", "unpack_throughput_vs_untar_zstd", "sibling_branch_new_bytes_fraction"] {
            let value = ratios.first { $0.key.hasPrefix(key) }?.value ?? 0
            #expect(value > 0, "\(key) missing or zero in \(ratios)")
        }
        #expect((report["branch_new_bytes"] as? Int ?? 0) > 0)
        #expect(try Self.source.run(["snapshots", "--json"]).stdout.contains("benchpk") == false, "bench snapshots were not removed")
    }
}
