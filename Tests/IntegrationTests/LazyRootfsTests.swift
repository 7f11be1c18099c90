import CladeStore
import Foundation
import Testing

/// The root filesystem of a lazily forked snapshot, with a real VM and a real registry: the child
/// starts while the rootfs is still in the registry, its disk reads fetch frames by range, a frame
/// the registry corrupted is never served (the child is stopped and says why), and a pull once the
/// registry is repaired completes the rootfs byte for byte.
extension PackTransferTests {
    /// The registry's stored copy of blob `digest` (`sha256:…`).
    func registryBlob(_ registry: TestRegistry, _ digest: String) -> URL {
        let hex = digest.replacingOccurrences(of: "sha256:", with: "")
        return registry.root.appendingPathComponent("data/docker/registry/v2/blobs/sha256/\(hex.prefix(2))/\(hex)/data")
    }

    /// The layers of the manifest `repository:tag` as the registry stores it.
    func registryLayers(_ registry: TestRegistry, repository: String, tag: String) throws -> [[String: Any]] {
        let link = registry.root.appendingPathComponent("data/docker/registry/v2/repositories/\(repository)/_manifests/tags/\(tag)/current/link")
        let digest = try String(contentsOf: link, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: registryBlob(registry, digest))) as? [String: Any]
        return manifest?["layers"] as? [[String: Any]] ?? []
    }

    @Test func theRootFilesystemArrivesLazilyAndAFrameTheRegistryCorruptedIsNeverServed() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let reference = try pushedFirst(registry, repository: "clade/rootfs")
        let layers = try registryLayers(registry, repository: "clade/rootfs", tag: "first")
        let rootfsLayer = try #require(layers.first { $0["mediaType"] as? String == "application/vnd.clade.disk.rootfs.v1.raw+zstd" }, "\(layers)")
        let indexLayer = try #require(layers.first { $0["mediaType"] as? String == "application/vnd.clade.disk.rootfs.index.v1+json" }, "the pack has no rootfs index: \(layers)")
        let rootfsBlob = registryBlob(registry, try #require(rootfsLayer["digest"] as? String))
        let rootfs = try #require((rootfsLayer["annotations"] as? [String: String])?["org.clade.content.digest"]).replacingOccurrences(of: "sha256:", with: "")
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: registryBlob(registry, try #require(indexLayer["digest"] as? String)))) as? [String: Any]
        let frames = (index?["frames"] as? [[String: Any]] ?? []).filter { $0["digest"] != nil }
        // The largest frame holds file data the guest reads but does not rewrite.
        let victim = try #require(frames.max { ($0["size"] as? Int ?? 0) < ($1["size"] as? Int ?? 0) })
        let victimOffset = try #require(victim["offset"] as? Int), victimSize = try #require(victim["size"] as? Int)
        let original = try Data(contentsOf: rootfsBlob)
        var corrupted = original
        corrupted[victimOffset + victimSize / 2] ^= 0xff
        try corrupted.write(to: rootfsBlob)

        // The fill is held, so only the guest's own reads fetch frames.
        let receiver = CLIHarness(home: CLIHarness.privateHome("lazy-rootfs"), environment: ["CLADE_LAZY_IDLE_SECONDS": "1", "CLADE_LAZY_FILL": "held"])
        let fork = try receiver.run(["fork", reference, "--insecure", "--no-prefetch", "--json"])
        let id = try #require((try? JSONSerialization.jsonObject(with: Data(fork.stdout.utf8)) as? [String: Any])?["id"] as? String, "lazy fork failed: \(fork.stderr)")
        let blob = receiver.home.appendingPathComponent("blobs/sha256/\(rootfs)")
        let served = receiver.home.appendingPathComponent("lazy/rootfs-\(rootfs)/mnt/rootfs")
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: blob.path)) == served.path, "the rootfs was not left to its lazy server")
        #expect(mounted(served.deletingLastPathComponent()), "the rootfs server is not mounted")
        #expect(try receiver.run(["exec", id, "--", "cat", "/root/sentinel"]).stdout == "packed-sentinel\n")
        let server = served.deletingLastPathComponent().deletingLastPathComponent()
        #expect((statistics(server)["chunksPresent"] as? Int ?? 0) < (statistics(server)["chunks"] as? Int ?? 0), "every frame arrived before the guest read its disk: \(statistics(server))")

        // Reading the whole disk, past the guest's page cache, reaches the corrupted frame: QEMU is
        // stopped before a byte of it reaches the guest, and the command says why (zstd's frame
        // checksum or the chunk's digest, whichever catches it first).
        let read = try receiver.run(["exec", id, "--", "sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches; cat /dev/vda > /dev/null"], timeout: 120)
        #expect(
            read.status != 0 && read.stderr.contains("stopped while the command ran") && read.stderr.contains("root filesystem")
                && (read.stderr.contains("digest") || read.stderr.contains("corrupt")), "reading a corrupted rootfs frame: \(read.stdout) \(read.stderr)")
        let stats = statistics(server)
        #expect((stats["demandFetches"] as? Int ?? 0) >= 1 && stats["complete"] as? Bool != true, "\(stats)")
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: blob.path)) == served.path, "an unverified rootfs replaced the link")

        // Once the registry holds the right bytes, a pull completes the rootfs, verified whole.
        try original.write(to: rootfsBlob)
        let pull = try receiver.run(["pull", reference, "--insecure", "--json"], timeout: 240)
        #expect(pull.status == 0 && (try? json(pull))?["completed_lazy_memory"] as? Bool == true, "pull after repair: \(pull.stdout) \(pull.stderr)")
        #expect(try FileSystem.status(of: blob)?.isRegularFile == true, "the pull returned before the rootfs was whole")
        let compare = try ExternalCommand("cmp", [Self.source.home.appendingPathComponent("blobs/sha256/\(rootfs)").path, blob.path]).run()
        #expect(compare.status == 0, "the completed rootfs differs from the source's: \(compare.stdout)")
        try expectBlobsIntact(receiver.home)
        let later = try receiver.run(["fork", "first", "--json"])
        let laterID = try #require((try? JSONSerialization.jsonObject(with: Data(later.stdout.utf8)) as? [String: Any])?["id"] as? String, "fork after the pull: \(later.stderr)")
        #expect(try receiver.run(["exec", laterID, "--", "cat", "/root/sentinel"]).stdout == "packed-sentinel\n")
        #expect(try receiver.run(["kill", laterID]).status == 0)
        #expect(eventually(30) { !mounted(served.deletingLastPathComponent()) && !FileManager.default.fileExists(atPath: server.path) }, "the rootfs server outlived its last user")
    }
}
