#if canImport(Glibc)
import Glibc
#endif
import CLazyFuse
import CladeModel
import CladeStore
import Foundation

extension LazyMemoryServer {
    /// Whether a live FUSE filesystem is mounted at `mountPoint` (a dead server's mount reports
    /// "transport endpoint is not connected" instead).
    public static func isServing(_ mountPoint: URL) -> Bool {
        clade_lazy_is_fuse_mount(mountPoint.path) == 1
    }

    /// Mounts the file and serves it until it is whole and unused; blocks. Started detached by
    /// the engine (`clade lazy-serve`), so it outlives the command that forked the sandboxes.
    public func run() throws {
        try FileManager.default.createDirectory(at: paths.downloads, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        // A previous server that died leaves a dead mount behind; it serves nobody.
        umount2(paths.mountPoint.path, Int32(MNT_DETACH))
        try FileManager.default.createDirectory(at: paths.mountPoint, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        try? FileSystem.remove(paths.failure)
        dataDescriptor = try FileSystem.open(paths.assembling, flags: O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode: 0o600)
        defer { close(dataDescriptor) }
        guard ftruncate(dataDescriptor, off_t(plan.logicalSize)) == 0 else {
            throw StoreError.systemCall("ftruncate", path: paths.assembling.path, errno: errno)
        }
        var callbacks = clade_lazy_callbacks(
            context: Unmanaged.passUnretained(self).toOpaque(),
            ensure: { context, offset, size in
                guard let context else { return -EIO }
                return Unmanaged<LazyMemoryServer>.fromOpaque(context).takeUnretainedValue().ensure(offset: offset, size: size)
            },
            opens_changed: { context, count in
                guard let context else { return }
                Unmanaged<LazyMemoryServer>.fromOpaque(context).takeUnretainedValue().opensChanged(Int(count))
            })
        var error = [CChar](repeating: 0, count: 512)
        // As root the mount admits every uid, so a confined VMM (its sandbox's uid) can open it.
        guard let server = clade_lazy_mount(
            paths.mountPoint.path, "memory", UInt64(plan.logicalSize), dataDescriptor, geteuid() == 0 ? 1 : 0, &callbacks, &error, error.count)
        else {
            throw PackError.malformed(what: "the lazy memory server", reason: String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        session = server
        defer { clade_lazy_destroy(server) }
        try FileSystem.writeAtomically(Data("\(getpid())\n".utf8), to: paths.pidFile)
        writeStatistics()
        logger.info("serving lazy memory", metadata: ["tag": "\(tag)", "chunks": "\(plan.chunks.count)", "mount": "\(paths.mountPoint.path)"])
        let fill = Thread { [self] in backgroundFill() }
        fill.start()
        let watch = Thread { [self] in watchForIdle() }
        watch.start()
        let result = clade_lazy_run(server, 16)
        condition.withLock { backgroundDone = true }
        unlink(paths.pidFile.path)
        logger.info("lazy memory server stopped", metadata: ["tag": "\(tag)", "loop": "\(result)", "complete": "\(currentStatistics.complete)"])
        let snapshotGone = (try? FileSystem.exists(snapshotDirectory.appendingPathComponent(LazyMemoryPlan.fileName, isDirectory: false))) != true
        if condition.withLock({ finalized }) || snapshotGone {
            // The snapshot owns the memory now, or is gone: nothing here is needed any more.
            rmdir(paths.mountPoint.path)
            try? FileSystem.remove(paths.directory)
        }
    }

    func opensChanged(_ count: Int) {
        condition.withLock {
            openCount = count
            lastOpenChange = Date()
        }
    }

    /// Fetches every chunk no fault has asked for yet, a few at a time, in passes until all are
    /// in; a pass that meets failures waits and tries again, and gives up after a few.
    func backgroundFill() {
        let workers = 4
        var failedPasses = 0
        while true {
            let missing = condition.withLock { states.indices.filter { states[$0] != .present } }
            if missing.isEmpty { break }
            let cursor = ChunkCursor()
            let failures = FailureCount()
            DispatchQueue.concurrentPerform(iterations: workers) { _ in
                while let position = cursor.next(below: missing.count) {
                    do { try obtain(missing[position], onDemand: false) } catch { failures.add() }
                }
            }
            if failures.value == 0 { continue }
            failedPasses += 1
            if failedPasses >= 5 {
                logger.error("background fill gave up; faults still retry", metadata: ["tag": "\(tag)"])
                condition.withLock { backgroundDone = true }
                return
            }
            condition.withLock { for index in states.indices { if case .failed = states[index] { states[index] = .absent } } }
            sleep(2)
        }
        do {
            try finalize()
        } catch {
            logger.error("the whole memory could not be placed in the snapshot", metadata: ["tag": "\(tag)", "error": "\(error)"])
        }
        condition.withLock { backgroundDone = true }
    }

    /// Makes the assembled file the snapshot's own memory file, replacing the link to this
    /// server's file: later forks map it directly, and a later pull finds the snapshot whole.
    func finalize() throws {
        guard fsync(dataDescriptor) == 0, fchmod(dataDescriptor, 0o444) == 0 else {
            throw StoreError.systemCall("fsync", path: paths.assembling.path, errno: errno)
        }
        let lock = try FileLock(home: home, .snapshot(tag))
        defer { lock.unlock() }
        guard let metadata = try JSONFiles.read(SnapshotMetadata.self, from: snapshotDirectory.appendingPathComponent(SnapshotMetadata.fileName, isDirectory: false)),
            metadata.id == plan.snapshotID
        else {
            logger.warning("snapshot was replaced while its memory was fetched; leaving it alone", metadata: ["tag": "\(tag)"])
            return
        }
        let staged = snapshotDirectory.appendingPathComponent(".memory.lazy-\(getpid())", isDirectory: false)
        unlink(staged.path)
        guard link(paths.assembling.path, staged.path) == 0 else { throw StoreError.systemCall("link", path: staged.path, errno: errno) }
        let memory = snapshotDirectory.appendingPathComponent(metadata.memory.file, isDirectory: false)
        guard rename(staged.path, memory.path) == 0 else {
            unlink(staged.path)
            throw StoreError.systemCall("rename", path: memory.path, errno: errno)
        }
        unlink(snapshotDirectory.appendingPathComponent(LazyMemoryPlan.fileName, isDirectory: false).path)
        try? FileSystem.sync(snapshotDirectory)
        condition.withLock { finalized = true }
        writeStatistics()
        logger.info("snapshot memory complete", metadata: ["tag": "\(tag)", "bytes_fetched": "\(currentStatistics.bytesFetched)"])
    }

    /// Stops the server once its background work is over and nothing has had the file open for
    /// `idleGrace` seconds (a mapping keeps it open, so a running guest keeps the server).
    func watchForIdle() {
        while true {
            sleep(1)
            let idle = condition.withLock { backgroundDone && openCount == 0 && Date().timeIntervalSince(lastOpenChange) >= idleGrace }
            if idle, let session {
                logger.info("nothing maps the lazy memory file; unmounting", metadata: ["tag": "\(tag)"])
                clade_lazy_stop(session)
                return
            }
        }
    }
}

/// Counts failed fetches across the fill's workers.
struct FailureCount: Sendable {
    private let count = Locked(0)
    func add() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
