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
}
