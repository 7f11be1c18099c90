import Foundation
import Testing

@testable import CladeStore

@Suite(.serialized) struct MaterializerTests {
    func scratch() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("clade-mat-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A sparse file: data, a hole, a page of written zeros, a hole, data.
    func makeSparseFile(_ url: URL) throws {
        let fd = try FileSystem.open(url, flags: O_WRONLY | O_CREAT | O_TRUNC)
        defer { close(fd) }
        let data = [UInt8](repeating: 0x5A, count: 8192)
        let zeros = [UInt8](repeating: 0, count: 4096)
        _ = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        _ = zeros.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 4 << 20) }
        _ = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 16 << 20) }
        _ = ftruncate(fd, 32 << 20)
    }

    @Test func hardlinkIsPreferredAndSharesTheInode() throws {
        let directory = try scratch()
        defer { try? FileSystem.remove(directory) }
        let source = directory.appendingPathComponent("memory")
        try makeSparseFile(source)
        let method = try Materializer().materialize(source, at: directory.appendingPathComponent("child"))
        #expect(method == .hardlink)
        let a = try #require(try FileSystem.status(of: source)), b = try #require(try FileSystem.status(of: directory.appendingPathComponent("child")))
        #expect(a.inode == b.inode)
        #expect(b.linkCount == 2)
    }

    @Test func fallsBackInOrderWhenLinkingAndCloningFail() throws {
        let directory = try scratch()
        defer {
            Materializer.injectedFailure = nil
            try? FileSystem.remove(directory)
        }
        let source = directory.appendingPathComponent("memory")
        try makeSparseFile(source)
        Materializer.injectedFailure = { $0 == .hardlink ? EXDEV : $0 == .reflink ? EOPNOTSUPP : nil }
        let destination = directory.appendingPathComponent("child")
        #expect(try Materializer().materialize(source, at: destination) == .sparseCopy)
        let copy = try #require(try FileSystem.status(of: destination))
        let original = try #require(try FileSystem.status(of: source))
        #expect(copy.inode != original.inode)
        #expect(copy.size == original.size)
        #expect(copy.allocatedBytes < 1 << 20, "holes must stay holes: \(copy.allocatedBytes) bytes allocated")
        #expect(try Data(contentsOf: destination) == Data(contentsOf: source))
    }

    @Test func realIOErrorsAreNotTreatedAsUnsupported() throws {
        let directory = try scratch()
        defer {
            Materializer.injectedFailure = nil
            try? FileSystem.remove(directory)
        }
        let source = directory.appendingPathComponent("memory")
        try makeSparseFile(source)
        Materializer.injectedFailure = { $0 == .hardlink ? EIO : nil }
        #expect(throws: StoreError.self) { try Materializer().materialize(source, at: directory.appendingPathComponent("child")) }
        #expect(try !FileSystem.exists(directory.appendingPathComponent("child")))
    }

    @Test func sparseCopyKeepsWrittenZerosAsData() throws {
        let directory = try scratch()
        defer { try? FileSystem.remove(directory) }
        let source = directory.appendingPathComponent("memory")
        try makeSparseFile(source)
        let destination = directory.appendingPathComponent("copy")
        try Materializer.copy(from: source, to: destination, mode: 0o444, sparse: true)
        // The zero page at 4 MiB was written, so it must be allocated in the copy too.
        let fd = try FileSystem.open(destination, flags: O_RDONLY)
        defer { close(fd) }
        #expect(lseek(fd, off_t(4 << 20), 3 /* SEEK_DATA */) == off_t(4 << 20))
        #expect(try FileSystem.status(of: destination)?.mode ?? 0 & 0o777 == 0o100444)
    }

    @Test func unshareGuardGivesAPrivateInodeAndLeavesOtherNamesAlone() throws {
        let directory = try scratch()
        defer { try? FileSystem.remove(directory) }
        let snapshot = directory.appendingPathComponent("snapshot-memory")
        try makeSparseFile(snapshot)
        let child1 = directory.appendingPathComponent("child1"), child2 = directory.appendingPathComponent("child2")
        try Materializer().materialize(snapshot, at: child1)
        try Materializer().materialize(snapshot, at: child2)
        let before = try #require(try FileSystem.status(of: snapshot))
        #expect(before.linkCount == 3)
        let digestBefore = try Digest.ofFile(at: snapshot).digest

        #expect(try Materializer().makeExclusive(child1))
        let private1 = try #require(try FileSystem.status(of: child1))
        #expect(private1.inode != before.inode)
        #expect(private1.linkCount == 1)
        #expect(try FileSystem.status(of: snapshot)?.inode == before.inode)
        #expect(try FileSystem.status(of: snapshot)?.linkCount == 2)
        #expect(try FileSystem.status(of: child2)?.inode == before.inode)
        #expect(try Digest.ofFile(at: child1).digest == digestBefore)

        // Writing the private copy in place no longer reaches the snapshot or the sibling.
        let fd = try FileSystem.open(child1, flags: O_WRONLY)
        _ = [UInt8](repeating: 0xFF, count: 4096).withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        close(fd)
        #expect(try Digest.ofFile(at: snapshot).digest == digestBefore)
        #expect(try Digest.ofFile(at: child2).digest == digestBefore)
        // A file with one name is left as it is.
        #expect(try !Materializer().makeExclusive(child1))
    }

    @Test func unshareGuardPropagatesStatErrors() throws {
        defer { FileSystem.injectedStatError = nil }
        let target = URL(fileURLWithPath: "/tmp/clade-guard-target")
        FileSystem.injectedStatError = { $0 == target.path ? EIO : nil }
        #expect(throws: StoreError.self) { try Materializer().makeExclusive(target) }
    }

    /// The reflink path on a filesystem that supports it. CI mounts an XFS loop device and
    /// sets CLADE_TEST_REFLINK_DIR; elsewhere the test says it did not run and why.
    @Test(.enabled(
        if: ProcessInfo.processInfo.environment["CLADE_TEST_REFLINK_DIR"] != nil,
        "skipped: needs CLADE_TEST_REFLINK_DIR, a directory on XFS (mkfs.xfs -m reflink=1) or btrfs; .ci/run creates one"))
    func reflinkOnACapableFilesystem() throws {
        let path = try #require(ProcessInfo.processInfo.environment["CLADE_TEST_REFLINK_DIR"])
        let directory = URL(fileURLWithPath: path).appendingPathComponent("mat-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileSystem.remove(directory) }
        #expect(FileSystem.supportsReflink(in: directory))
        let source = directory.appendingPathComponent("memory")
        try makeSparseFile(source)
        let destination = directory.appendingPathComponent("clone")
        #expect(try Materializer().materialize(source, at: destination, order: Materializer.privateCopyOrder) == .reflink)
        #expect(try Data(contentsOf: destination) == Data(contentsOf: source))
        #expect(try FileSystem.status(of: destination)?.inode != FileSystem.status(of: source)?.inode)
    }
}
