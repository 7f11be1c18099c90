import CladeStore
import Foundation
import Testing

/// Fork with the snapshot and the sandbox directory on different filesystems: the memory file
/// cannot be hardlinked (or cloned across filesystems), so fork falls back and says why.
/// Needs root and CLADE_TEST_REFLINK_DIR (an XFS mount, made by scripts/reflink-testfs.sh in CI).
@Suite(.serialized) struct ForkFallbackTests {
    static let xfs = ProcessInfo.processInfo.environment["CLADE_TEST_REFLINK_DIR"]

    @Test(.enabled(
        if: xfs != nil && getuid() == 0,
        "skipped: needs root and CLADE_TEST_REFLINK_DIR (a second filesystem, e.g. from scripts/reflink-testfs.sh); .ci/run provides both"))
    func forkAcrossFilesystemsFallsBackAndNamesThePath() throws {
        let xfs = try #require(Self.xfs)
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("clade-fallback-\(getpid())")
        let sandboxes = home.appendingPathComponent("sandboxes")
        let other = URL(fileURLWithPath: xfs).appendingPathComponent("sandboxes-\(getpid())")
        try FileManager.default.createDirectory(at: sandboxes, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: other, withIntermediateDirectories: true)
        // A bind mount (not a symlink) so that ".." from a sandbox directory still leads to the home.
        try ExternalCommand("mount", ["--bind", other.path, sandboxes.path]).check()
        defer {
            _ = try? ExternalCommand("umount", [sandboxes.path]).run()
            try? FileSystem.remove(home)
            try? FileSystem.remove(other)
        }
        #expect(try FileSystem.filesystemType(at: sandboxes) != FileSystem.filesystemType(at: home))
        let cli = CLIHarness(home: home)
        let bake = try cli.run(["bake", "--tag", "far"])
        #expect(bake.status == 0, "\(bake.stderr)")
        let fork = try cli.run(["fork", "far", "-n", "1", "--json"])
        #expect(fork.status == 0, "\(fork.stderr)")
        #expect(fork.stdout.contains("\"memory\":\"sparse-copy\""), "\(fork.stdout)")
        #expect(fork.stderr.contains("materialized by fallback"), "the fallback must be logged: \(fork.stderr)")
        #expect(fork.stderr.contains("hardlink failed") && fork.stderr.contains("cross-device"), "\(fork.stderr)")
        let child = try #require((try JSONSerialization.jsonObject(with: Data(fork.stdout.utf8)) as? [String: Any])?["id"] as? String)
        let echo = try cli.run(["exec", child, "--", "echo", "far"])
        #expect(echo.stdout == "far\n")
        #expect(try cli.run(["kill", child]).status == 0)
    }

    /// The whole store on the reflink-capable filesystem: a fork asked for per-child reflinks gets
    /// them (each child its own inode sharing the snapshot's extents), and the snapshot is untouched.
    @Test(.enabled(
        if: xfs != nil,
        "skipped: needs CLADE_TEST_REFLINK_DIR (an XFS reflink filesystem, from scripts/reflink-testfs.sh); .ci/run provides it"))
    func forkWithReflinkPlacementOnXFS() throws {
        let xfs = try #require(Self.xfs)
        let home = URL(fileURLWithPath: xfs).appendingPathComponent("home-\(getpid())")
        defer { try? FileSystem.remove(home) }
        let cli = CLIHarness(home: home)
        #expect(try cli.run(["bake", "--tag", "cloned"]).status == 0)
        let memory = home.appendingPathComponent("snapshots/cloned/memory")
        let before = try Digest.ofFile(at: memory).digest
        let fork = try cli.run(["fork", "cloned", "-n", "2", "--memory-placement", "reflink", "--json"])
        #expect(fork.status == 0, "\(fork.stderr)")
        let children = fork.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(children.count == 2)
        #expect(children.allSatisfy { $0["memory"] as? String == "reflink" }, "\(fork.stdout)")
        for child in children {
            let id = try #require(child["id"] as? String)
            #expect(try FileSystem.status(of: home.appendingPathComponent("sandboxes/\(id)/memory"))?.inode != FileSystem.status(of: memory)?.inode)
            #expect(try cli.run(["exec", id, "--", "sh", "-c", "head -c 10000000 /dev/urandom > /tmp/x; echo ok"]).stdout == "ok\n")
        }
        #expect(try Digest.ofFile(at: memory).digest == before)
        #expect(try FileSystem.status(of: memory)?.linkCount == 1)
        #expect(try cli.run(["rmi", "--cascade", "cloned"]).status == 0)
    }
}
