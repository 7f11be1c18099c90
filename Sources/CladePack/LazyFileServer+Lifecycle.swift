#if canImport(Glibc)
import Glibc
#endif
import CLazyFuse
import CladeModel
import CladeStore
import CladeVMM
import Foundation

extension LazyFileServer {
    /// Whether the server of `paths` is alive with its FUSE filesystem mounted. Asked without a
    /// request to the filesystem (the mount table and the server's process), so a server that
    /// hangs cannot hang `clade ls` with it; a dead server's mount stays in the table, but its
    /// process is gone (or a zombie, or its pid now another program's).
    public static func isServing(_ paths: LazyFilePaths) -> Bool {
        guard let pid = ProcessControl.readPidFile(paths.pidFile), ProcessControl.isAlive(pid, marker: "lazy-serve") else { return false }
        return isMounted(paths.mountPoint)
    }

    /// Whether a FUSE filesystem is mounted at `mountPoint`, from `/proc/self/mountinfo`.
    static func isMounted(_ mountPoint: URL) -> Bool {
        // Read to its end: String(contentsOfFile:) stops at the first ~4 KiB of a /proc table.
        guard let data = try? FileSystem.readProcFile("/proc/self/mountinfo") else { return false }
        let table = String(decoding: data, as: UTF8.self)
        // Field 5 is the mount point (spaces escaped as \040); the type follows the " - " separator.
        let wanted = mountPoint.standardizedFileURL.path.replacingOccurrences(of: " ", with: "\\040")
        return table.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            guard fields.count > 4, fields[4] == wanted, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { return false }
            return fields[dash + 1].hasPrefix("fuse")
        }
    }

    /// Mounts the file and serves it until it is whole and unused; blocks. Started detached by
    /// the engine (`clade lazy-serve`), so it outlives the command that forked the sandboxes.
    public func run() throws {
        // A registry connection or the FUSE device closed under a write must fail that write,
        // not end the server silently: every guest mapping its file would then be stopped.
        signal(SIGPIPE, SIG_IGN)
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
            ensure: { context, offset, size, requester in
                guard let context else { return -EIO }
                return Unmanaged<LazyFileServer>.fromOpaque(context).takeUnretainedValue().ensure(offset: offset, size: size, requester: requester)
            },
            opens_changed: { context, count in
                guard let context else { return }
                Unmanaged<LazyFileServer>.fromOpaque(context).takeUnretainedValue().opensChanged(Int(count))
            })
        var error = [CChar](repeating: 0, count: 512)
        // As root the mount admits every uid, so a confined VMM (its sandbox's uid) can open it.
        guard let server = clade_lazy_mount(
            paths.mountPoint.path, paths.fileName, UInt64(plan.logicalSize), dataDescriptor, geteuid() == 0 ? 1 : 0, &callbacks, &error, error.count)
        else {
            throw PackError.malformed(what: "the lazy \(plan.fileWhat) server", reason: String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        session = server
        defer { clade_lazy_destroy(server) }
        try FileSystem.writeAtomically(Data("\(getpid())\n".utf8), to: paths.pidFile)
        writeStatistics()
        logger.info("serving lazily", metadata: ["serving": "\(subject)", "chunks": "\(plan.chunks.count)", "mount": "\(paths.mountPoint.path)"])
        // An eager pull of this snapshot asks the fill to try at once (see ``kickFill()``).
        signal(SIGUSR1, SIG_IGN)
        let kicks = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: .global())
        kicks.setEventHandler { [self] in kickFill() }
        kicks.resume()
        defer { kicks.cancel() }
        let fill = Thread { [self] in
            prefetch()
            backgroundFill()
        }
        fill.start()
        let watch = Thread { [self] in watchForIdle() }
        watch.start()
        let result = clade_lazy_run(server, 16)
        condition.withLock { backgroundDone = true }
        unlink(paths.pidFile.path)
        logger.info("lazy server stopped", metadata: ["serving": "\(subject)", "loop": "\(result)", "complete": "\(currentStatistics.complete)"])
        let planFile = snapshotDirectory?.appendingPathComponent(LazyFilePlan.fileName, isDirectory: false) ?? paths.rootfsPlan
        let planGone = (try? FileSystem.exists(planFile)) != true
        if condition.withLock({ finalized }) || planGone {
            // The snapshot (or the blob store) owns the file now, or it is gone: nothing here is needed any more.
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
    /// in. A pass that meets failures waits, longer each time up to a minute, and tries again: a
    /// registry that comes back completes the snapshot without anyone asking. A kick (SIGUSR1,
    /// sent by an eager `clade pull` of this snapshot) ends the wait at once. Once the fill has
    /// failed a few passes in a row it no longer keeps an unused server alive.
    func backgroundFill() {
        if fillHeld {
            logger.info("background fill held until kicked", metadata: ["serving": "\(subject)"])
            condition.withLock { fillStalled = true }
            fillKick.wait()
            condition.withLock { fillStalled = false }
        }
        // A rootfs is mostly what guests do not read soon (their page cache came with the
        // snapshot): one fetch at a time leaves the link to the memory guests are faulting on.
        let workers = plan.servesRootfs ? 1 : 4
        var failedPasses = 0
        while true {
            let missing = condition.withLock { states.indices.filter { states[$0] != .present } }
            if missing.isEmpty { break }
            let cursor = ChunkCursor()
            let failures = FailureCount()
            Self.runWorkers(workers) { [self] in
                while let position = cursor.next(below: missing.count) {
                    do { try obtain(missing[position], onDemand: false) } catch { failures.add() }
                }
            }
            if failures.value == 0 { continue }
            failedPasses += 1
            if failedPasses == 2 {
                logger.error("background fill is failing; faults still retry, and the fill keeps trying less often", metadata: ["serving": "\(subject)"])
                condition.withLock { fillStalled = true }
            }
            condition.withLock { for index in states.indices { if case .failed = states[index] { states[index] = .absent } } }
            let pause = min(60, 1 << min(failedPasses, 6))
            if fillKick.wait(timeout: .now() + .seconds(pause)) == .success {
                logger.info("background fill kicked; retrying now", metadata: ["serving": "\(subject)"])
                failedPasses = 0
                condition.withLock { fillStalled = false }
            }
        }
        do {
            if plan.servesRootfs { try finalizeRootfs() } else { try finalize() }
        } catch {
            logger.error("the whole file could not be placed in the store", metadata: ["serving": "\(subject)", "error": "\(error)"])
        }
        condition.withLock { backgroundDone = true }
    }

    /// Ends the fill's wait (its hold, or its pause after a failed pass) so it tries at once.
    public func kickFill() {
        fillKick.signal()
    }

    /// Makes the assembled file the snapshot's own memory file, replacing the link to this
    /// server's file: later forks map it directly, and a later pull finds the snapshot whole.
    func finalize() throws {
        guard let snapshotTag, let snapshotDirectory else { return }
        guard fsync(dataDescriptor) == 0, fchmod(dataDescriptor, 0o444) == 0 else {
            throw StoreError.systemCall("fsync", path: paths.assembling.path, errno: errno)
        }
        let lock = try FileLock(home: home, .snapshot(snapshotTag))
        defer { lock.unlock() }
        guard let metadata = try JSONFiles.read(SnapshotMetadata.self, from: snapshotDirectory.appendingPathComponent(SnapshotMetadata.fileName, isDirectory: false)),
            metadata.id == plan.snapshotID
        else {
            logger.warning("snapshot was replaced while its memory was fetched; leaving it alone", metadata: ["serving": "\(subject)"])
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
        unlink(snapshotDirectory.appendingPathComponent(LazyFilePlan.fileName, isDirectory: false).path)
        try? FileSystem.sync(snapshotDirectory)
        condition.withLock { finalized = true }
        writeStatistics()
        logger.info("snapshot memory complete", metadata: ["serving": "\(subject)", "bytes_fetched": "\(currentStatistics.bytesFetched)"])
    }

    /// Stops the server once its background work is over (or failing) and nothing has had the file open for
    /// `idleGrace` seconds (a mapping keeps it open, so a running guest keeps the server).
    func watchForIdle() {
        while true {
            sleep(1)
            let idle = condition.withLock { (backgroundDone || fillStalled) && openCount == 0 && Date().timeIntervalSince(lastOpenChange) >= idleGrace }
            if idle, let session {
                logger.info("nothing has the lazily served file open; unmounting", metadata: ["serving": "\(subject)"])
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
