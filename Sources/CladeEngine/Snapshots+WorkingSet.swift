#if canImport(Glibc)
import Glibc
#endif
import CladeGuestProtocol
import CladeModel
import CladePack
import CladeStore
import CladeVMM
import Foundation

/// What recording a working set found.
public struct WorkingSetReport: Codable, Sendable {
    public var tag: String
    /// Memory chunks a fresh fork touched, of the chunks the memory file has.
    public var chunks: Int
    public var totalChunks: Int
    /// Bytes those chunks hold, before compression.
    public var bytes: Int64
    public var seconds: Double
}

extension Snapshots {
    /// Records which memory a fresh fork of `tag` touches until its first command (and, with a
    /// resident interpreter, its first `eval`) has answered, and keeps it with the snapshot as
    /// `working-set.json`; `clade push` and `clade pack` then carry it, and lazy forks elsewhere
    /// fetch those chunks first, in parallel.
    ///
    /// It drops the memory file's cached pages that nothing maps, forks one child that maps the
    /// file itself (a hard link), and reads the file's page-cache residency (`mincore`) once the
    /// child has answered: the pages in cache are the ones the child read, with the kernel's
    /// read-around. Running forks of `tag` keep their pages cached, so they can only add to it.
    public func recordWorkingSet(tag: String) async throws -> WorkingSetReport {
        let started = Date()
        let metadata = try snapshotCatalog.require(tag)
        let directory = snapshotCatalog.directory(tag)
        if try LazyFilePlan.load(in: directory) != nil {
            throw EngineError.wrongState("snapshot '\(tag)' is still arriving from its registry; record a working set where it was baked, or once `clade pull` has completed it")
        }
        let memory = directory.appendingPathComponent(metadata.memory.file, isDirectory: false)
        let fd = try FileSystem.open(memory, flags: O_RDONLY | O_CLOEXEC)
        defer { close(fd) }
        let size = Int(metadata.memory.logicalSize)
        _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED))
        let outcomes = try await engine.forks.fork(tag: tag, count: 1, memoryOrder: [.hardlink])
        guard let child = outcomes.first?.record else {
            throw EngineError.guestFailed("the fork that records the working set of '\(tag)' failed: \(outcomes.first?.error ?? "no child")")
        }
        let resident: [UInt8]
        do {
            _ = try await engine.sandboxes.exec(id: child.id, argv: ["true"], timeout: 120)
            _ = try? await engine.processes.eval(id: child.id, code: "None", timeout: 120)
            resident = try Self.residency(fd: fd, size: size, path: memory.path)
        } catch {
            try? await engine.sandboxes.kill(id: child.id)
            throw error
        }
        try? await engine.sandboxes.kill(id: child.id)
        let chunkSize = PackFormat.memoryChunkSize
        let pagesPerChunk = chunkSize / DirtyPages.pageSize as Int
        var chunks: [Int64] = []
        for chunk in 0..<((resident.count + pagesPerChunk - 1) / pagesPerChunk) {
            let pages = resident[(chunk * pagesPerChunk)..<min(resident.count, (chunk + 1) * pagesPerChunk)]
            if pages.contains(where: { $0 & 1 != 0 }) { chunks.append(Int64(chunk)) }
        }
        guard !chunks.isEmpty else {
            throw EngineError.guestFailed("the fork of '\(tag)' left none of the memory file in the page cache (was it placed by copy, not a hard link?); nothing recorded")
        }
        let workingSet = WorkingSet(chunkSize: Int64(chunkSize), chunks: chunks, recordedAt: Date(), recordedBy: "clade \(CladeVersion.current): a fork's first exec")
        try workingSet.save(in: directory)
        logger.info("recorded the working set", metadata: ["tag": "\(tag)", "chunks": "\(chunks.count)"])
        return WorkingSetReport(
            tag: tag, chunks: chunks.count, totalChunks: (size + chunkSize - 1) / chunkSize, bytes: Int64(chunks.count * chunkSize),
            seconds: Date().timeIntervalSince(started))
    }

    /// One byte per page of the file: bit 0 set when the page is in the page cache.
    static func residency(fd: Int32, size: Int, path: String) throws -> [UInt8] {
        guard let mapping = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), mapping != MAP_FAILED else {
            throw StoreError.systemCall("mmap", path: path, errno: errno)
        }
        defer { munmap(mapping, size) }
        var vector = [UInt8](repeating: 0, count: (size + DirtyPages.pageSize - 1) / DirtyPages.pageSize)
        guard mincore(mapping, size, &vector) == 0 else { throw StoreError.systemCall("mincore", path: path, errno: errno) }
        return vector
    }
}
