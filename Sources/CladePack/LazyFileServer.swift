#if canImport(Glibc)
import Glibc
#endif
import CLazyFuse
import CladeModel
import CladeStore
import Foundation
import Logging

/// Serves a lazily pulled file over FUSE, a snapshot's memory or its image's root filesystem: a
/// guest's page fault (memory) or QEMU's read of the disk's base (rootfs) becomes a read here,
/// answered once the chunk holding it has been fetched from the registry, verified against the
/// pack's digest and written into the file being assembled. A background fill fetches the rest;
/// when every chunk is in, the assembled file becomes the snapshot's own memory file (or the
/// store's rootfs blob, once the whole file matches its digest), and the server leaves once
/// nothing has its file open any more.
///
/// Writes never reach it: QEMU maps memory private and opens a backing file read-only, so a
/// guest's writes stay its own, and siblings share the kernel's page cache of this one file.
public final class LazyFileServer: @unchecked Sendable {
    enum ChunkState: Equatable {
        case absent, fetching, present
        case failed(String)
    }

    let home: CladeHome
    /// What is served, in messages: `snapshot 'TAG'` or `root filesystem sha256:…`.
    let subject: String
    /// The snapshot whose memory is served; nil for a rootfs.
    let snapshotTag: String?
    let snapshotDirectory: URL?
    let plan: LazyFilePlan
    let paths: LazyFilePaths
    let client: RegistryClient
    let logger: Logger
    /// How long the file must be unused, once whole (or given up on), before the server leaves.
    let idleGrace: TimeInterval

    /// Guards everything below; waiters on a chunk being fetched wait on it.
    let condition = NSCondition()
    var states: [ChunkState]
    var statistics: LazyFileStatistics
    var openCount = 0
    var lastOpenChange = Date()
    var backgroundDone = false
    /// The fill has failed several passes in a row: it must not keep an unused server alive.
    var fillStalled = false
    /// Whether the fill waits for a kick before its first pass (tests hold it to keep chunks
    /// absent while they cut the registry off: `CLADE_LAZY_FILL=held`).
    let fillHeld: Bool
    /// Whether the working set, when the pack recorded one, is fetched before children start.
    let prefetchEnabled: Bool
    /// Signalled by ``kickFill()``.
    let fillKick = DispatchSemaphore(value: 0)
    var finalized = false
    /// Indices into `plan.chunks` by chunk number (offset / chunk size); holes have none.
    let chunkIndex: [Int64: Int]
    var dataDescriptor: Int32 = -1
    var session: OpaquePointer?

    /// Attempts per chunk before a fault fails with EIO (and its guest stops).
    static let attempts = 3
    /// How long a chunk that failed its attempts fails again without a new fetch.
    static let failureMemory: TimeInterval = 10
    /// When each failed chunk last failed.
    var failedAt: [Int: Date] = [:]
    /// The read each thread last failed (its offset and size): the kernel retries a fault that
    /// cannot be satisfied with the same read, while read-arounds of different faults that stray
    /// into one failed chunk differ.
    var failedRequests: [Int32: [UInt64]] = [:]

    /// The server of snapshot `tag`'s memory.
    public convenience init(
        home: CladeHome, tag: String, credentials: RegistryCredentials?, idleGrace: TimeInterval = 10, fillHeld: Bool = false, prefetch: Bool = true, logger: Logger
    ) throws {
        let directory = SnapshotCatalog(home: home).directory(tag)
        guard let plan = try LazyFilePlan.load(in: directory) else {
            throw PackError.noSnapshot("snapshot '\(tag)' has no lazily fetched memory (its memory file is whole)")
        }
        try self.init(
            home: home, plan: plan, subject: "snapshot '\(tag)'", snapshotTag: tag, snapshotDirectory: directory,
            paths: LazyFilePaths(home: home, snapshotID: plan.snapshotID), credentials: credentials, idleGrace: idleGrace, fillHeld: fillHeld,
            prefetch: prefetch, logger: logger)
    }

    /// The server of root filesystem `rootfs`, shared by every snapshot of its image.
    public convenience init(
        home: CladeHome, rootfs: Digest, credentials: RegistryCredentials?, idleGrace: TimeInterval = 10, fillHeld: Bool = false, logger: Logger
    ) throws {
        guard let plan = try LazyFilePlan.loadRootfs(rootfs, home: home) else {
            throw PackError.noSnapshot("root filesystem \(rootfs) is not being fetched lazily (it is whole in the store, or was never pulled lazily)")
        }
        try self.init(
            home: home, plan: plan, subject: "root filesystem \(rootfs.short)", snapshotTag: nil, snapshotDirectory: nil,
            paths: LazyFilePaths(home: home, rootfs: rootfs), credentials: credentials, idleGrace: idleGrace, fillHeld: fillHeld, prefetch: false,
            logger: logger)
    }

    init(
        home: CladeHome, plan: LazyFilePlan, subject: String, snapshotTag: String?, snapshotDirectory: URL?, paths: LazyFilePaths,
        credentials: RegistryCredentials?, idleGrace: TimeInterval, fillHeld: Bool, prefetch: Bool, logger: Logger
    ) throws {
        self.home = home
        self.fillHeld = fillHeld
        prefetchEnabled = prefetch
        self.subject = subject
        self.snapshotTag = snapshotTag
        self.snapshotDirectory = snapshotDirectory
        self.logger = logger
        self.idleGrace = idleGrace
        self.plan = plan
        self.paths = paths
        let reference = try RegistryReference(parsing: plan.reference)
        // A guest waits on every fetch, so a registry that refuses connections must fail fast.
        client = RegistryClient(reference: reference, insecure: plan.insecure, credentials: credentials, connectTimeout: .seconds(2), logger: logger)
        states = Array(repeating: .absent, count: plan.chunks.count)
        chunkIndex = Dictionary(uniqueKeysWithValues: plan.chunks.enumerated().map { ($0.element.offset / plan.chunkSize, $0.offset) })
        statistics = LazyFileStatistics(
            chunks: plan.chunks.count, chunksPresent: 0, fetches: 0, bytesFetched: 0, demandFetches: 0, complete: plan.chunks.isEmpty, failure: nil)
    }

    // MARK: - Faults

    /// Makes `[offset, offset + size)` readable from the assembled file: 0, or a negative errno.
    /// When a chunk cannot be had and a VMM faulted on it, that VMM is stopped: the kernel
    /// retries a failed fault of a mapped file for ever, so its guest would hang, not crash.
    func ensure(offset: UInt64, size: UInt64, requester: Int32) -> Int32 {
        guard size > 0 else { return 0 }
        let first = Int64(offset) / plan.chunkSize
        let last = (Int64(offset) + Int64(size) - 1) / plan.chunkSize
        for number in first...last {
            guard let index = chunkIndex[number] else { continue }  // a hole: zeros
            do {
                try obtain(index, onDemand: true)
            } catch {
                // A read-around that strays into a missing chunk fails harmlessly: the kernel
                // then reads the faulted page alone. A one-page read, or one thread's same read
                // failing twice, is a fault that cannot be satisfied. A disk read is QEMU's own,
                // never a read-around: the guest would see an I/O error.
                let repeated = condition.withLock { failedRequests.updateValue([offset, size], forKey: requester) == [offset, size] }
                if size <= 4096 || repeated || plan.servesRootfs { stopFaultingMachine(thread: requester, offset: offset, size: size) }
                return -EIO
            }
        }
        return 0
    }

    /// Kills the VMM whose thread `thread` faulted on memory that cannot be had; its sandbox then
    /// reads as dead with the reason in `failure`. Any other reader (a branch reading a guest's
    /// memory through procfs) only gets the error.
    func stopFaultingMachine(thread: Int32, offset: UInt64, size: UInt64) {
        guard thread > 0, let status = try? String(contentsOfFile: "/proc/\(thread)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Tgid:") }),
            let process = Int32(line.dropFirst(5).trimmingCharacters(in: .whitespaces)), process > 1,
            let name = try? String(contentsOfFile: "/proc/\(process)/comm", encoding: .utf8), name.hasPrefix("qemu-system")
        else { return }
        logger.error("stopping the VMM that needs a chunk which cannot be fetched", metadata: ["pid": "\(process)", "thread": "\(thread)", "offset": "\(offset)", "size": "\(size)", "serving": "\(subject)"])
        kill(process, SIGKILL)
    }

    /// Returns once chunk `index` is in the assembled file, fetching it unless another thread is.
    func obtain(_ index: Int, onDemand: Bool) throws {
        condition.lock()
        while true {
            switch states[index] {
            case .present:
                condition.unlock()
                return
            case .fetching:
                condition.wait()
                continue
            case .failed(let reason) where onDemand && Date().timeIntervalSince(failedAt[index] ?? .distantPast) < Self.failureMemory:
                // Just retried and failed: a fault's repeats are answered at once, not refetched.
                condition.unlock()
                throw PackError.registry(reason)
            case .failed(let reason) where !onDemand:
                // The background fill leaves a failed chunk to a fault or its next pass.
                condition.unlock()
                throw PackError.malformed(what: "\(plan.fileWhat) chunk at \(plan.chunks[index].offset)", reason: reason)
            case .absent, .failed:
                states[index] = .fetching
            }
            break
        }
        condition.unlock()
        do {
            let fetched = try fetchWithRetries(index)
            condition.lock()
            states[index] = .present
            statistics.chunksPresent += 1
            if fetched > 0 {
                statistics.fetches += 1
                statistics.bytesFetched += fetched
                if onDemand { statistics.demandFetches += 1 }
            } else {
                statistics.reusedChunks = (statistics.reusedChunks ?? 0) + 1
            }
            statistics.complete = statistics.chunksPresent == statistics.chunks
            // A failure that retries have since overcome no longer explains anything.
            let recovered = statistics.failure != nil && !states.contains { if case .failed = $0 { return true } else { return false } }
            if recovered { statistics.failure = nil }
            condition.broadcast()
            condition.unlock()
            if recovered { unlink(paths.failure.path) }
        } catch {
            let reason = "\(plan.fileWhat) chunk at offset \(plan.chunks[index].offset) of \(subject) could not be fetched from \(plan.reference) after \(Self.attempts) attempts: \(error)"
            condition.lock()
            states[index] = .failed(reason)
            failedAt[index] = Date()
            statistics.failure = reason
            condition.broadcast()
            condition.unlock()
            logger.error("chunk unavailable", metadata: ["offset": "\(plan.chunks[index].offset)", "error": "\(error)"])
            try? FileSystem.writeAtomically(Data((reason + "\n").utf8), to: paths.failure)
            throw error
        }
        writeStatistics()
    }

    private func fetchWithRetries(_ index: Int) throws -> Int64 {
        var lastError: Error = PackError.malformed(what: "\(plan.fileWhat) chunk", reason: "not attempted")
        for attempt in 0..<Self.attempts {
            if attempt > 0 { usleep(UInt32(250_000 << attempt)) }
            do {
                return try fetchOnce(index)
            } catch {
                lastError = error
                logger.warning("chunk fetch failed", metadata: ["offset": "\(plan.chunks[index].offset)", "attempt": "\(attempt + 1)", "error": "\(error)"])
            }
        }
        throw lastError
    }

    /// Downloads one chunk (verified against its digest by the download), decompresses it into
    /// memory, checks its size, and only then writes its non-zero pages into the assembled file:
    /// no unverified byte is ever readable by a guest. The verified compressed chunk is kept in
    /// the store's blob directory under its digest, where a later lazy fork or a pull of any
    /// snapshot that shares it takes it instead of the registry (until `clade gc`, which finds
    /// nothing referencing it); a chunk already there is not fetched at all.
    private func fetchOnce(_ index: Int) throws -> Int64 {
        if plan.servesRootfs { return try fetchFrame(index) }
        let chunk = plan.chunks[index]
        let digest = try plan.digest(of: chunk, what: "memory chunk at \(chunk.offset)")
        let kept = BlobStore(home: home).url(for: digest)
        var fetched: Int64 = 0
        var fd = open(kept.path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        if fd < 0 {
            let download = paths.downloads.appendingPathComponent("\(index)-\(digest.hex)", isDirectory: false)
            defer { unlink(download.path) }
            let client = client
            let size = chunk.size
            fetched = max(try Self.waitFor { try await client.downloadBlob(digest, size: size, to: download) }, size)
            fd = try FileSystem.open(download, flags: O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
            fchmod(fd, 0o444)
            // Another server may have kept the same chunk meanwhile; either copy is the same bytes.
            _ = link(download.path, kept.path)
        }
        defer { close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(chunk.contentSize), alignment: 4096)
        defer { buffer.deallocate() }
        var filled = 0
        let what = "memory chunk at \(chunk.offset) of \(subject)"
        try LayoutReader.decompress(
            fd: fd, descriptor: Descriptor(mediaType: MediaType.memoryChunk, digest: digest, size: chunk.size), what: what,
            contentSize: chunk.contentSize, onRead: { _ in }
        ) { piece in
            UnsafeMutableRawBufferPointer(rebasing: buffer[filled..<(filled + piece.count)]).copyMemory(from: piece)
            filled += piece.count
        }
        guard filled == Int(chunk.contentSize) else { throw PackError.sizeMismatch(what: what, declared: chunk.contentSize, actual: Int64(filled)) }
        try MemoryAssembler.writeNonZeroPages(fd: dataDescriptor, UnsafeRawBufferPointer(buffer), at: chunk.offset, path: paths.assembling.path)
        return fetched
    }

    /// Runs async work from one of libfuse's threads (not a Swift concurrency thread), blocking it.
    static func waitFor<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) throws -> T {
        let outcome = Outcome<T>()
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            do { outcome.set(.success(try await work())) } catch { outcome.set(.failure(error)) }
            done.signal()
        }
        done.wait()
        return try outcome.get()
    }

    final class Outcome<T: Sendable>: @unchecked Sendable {
        private let lock = NSLock()
        private var result: Result<T, Error>?
        func set(_ value: Result<T, Error>) { lock.withLock { result = value } }
        func get() throws -> T {
            guard let result = lock.withLock({ result }) else { throw PackError.malformed(what: "a fetch", reason: "it ended without a result") }
            return try result.get()
        }
    }

    /// The counters as they are now.
    public var currentStatistics: LazyFileStatistics { condition.withLock { statistics } }

    func writeStatistics() {
        let snapshot = currentStatistics
        try? JSONFiles.write(snapshot, to: paths.statistics)
    }
}
