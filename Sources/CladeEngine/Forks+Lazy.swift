#if canImport(Glibc)
import Glibc
#endif
import CladeModel
import CladePack
import CladeStore
import CladeVMM
import Foundation

/// Forks of a snapshot pulled lazily (`clade pull --lazy`, `clade fork REFERENCE`): its memory
/// file is served by a FUSE server of its own, which fetches each chunk from the registry when a
/// guest first touches it.
extension Forks {
    /// The chunk table of `metadata`'s snapshot while its memory is still being fetched, else nil.
    func lazyMemoryPlan(_ metadata: SnapshotMetadata) throws -> LazyFilePlan? {
        try LazyFilePlan.load(in: snapshotCatalog.directory(metadata.tag))
    }

    /// Whether snapshot `tag`'s memory or root filesystem is still being fetched lazily.
    func holdsLazily(tag: String) throws -> Bool {
        guard let metadata = try snapshotCatalog.get(tag) else { return false }
        if try lazyMemoryPlan(metadata) != nil { return true }
        return try LazyFilePlan.loadRootfs(metadata.rootfs, home: home) != nil
            && FileSystem.status(of: BlobStore(home: home).url(for: metadata.rootfs))?.isRegularFile != true
    }

    /// Starts the FUSE server of snapshot `tag` if its memory is still being fetched lazily and no
    /// server serves it, and waits until it has mounted and, with `prefetch`, fetched the
    /// working set the pack recorded. Nothing happens for a snapshot whose memory is whole.
    /// `fork` does this itself, prefetching; call it first to choose.
    public func serveLazyMemory(tag: String, prefetch: Bool) throws {
        let metadata = try snapshotCatalog.require(tag)
        guard let plan = try lazyMemoryPlan(metadata) else { return }
        try ensureLazyMemoryServed(metadata, plan: plan, prefetch: prefetch)
    }

    /// Makes sure the snapshot's FUSE server is serving, starting it detached (so it outlives
    /// this process and a `clade serve` restart) when it is not; waits until it has mounted and
    /// has done its prefetch.
    func ensureLazyMemoryServed(_ metadata: SnapshotMetadata, plan: LazyFilePlan, prefetch: Bool = true) throws {
        try requireRootForLazy(what: "snapshot '\(metadata.tag)'", plan: plan)
        let paths = LazyFilePaths(home: home, snapshotID: plan.snapshotID)
        try ensureServed(paths, lock: .lazyServer(plan.snapshotID), arguments: [metadata.tag] + (prefetch ? [] : ["--no-prefetch"]), what: "snapshot '\(metadata.tag)'")
        try awaitPrefetch(paths, plan: plan)
    }

    /// Makes sure root filesystem `rootfs` is readable: nothing to do when the store holds it
    /// whole; else its FUSE server (one for every snapshot of the image) is started if none
    /// serves it. QEMU then opens the served file through the blob store's link.
    func ensureLazyRootfsServed(_ rootfs: Digest) throws {
        guard let plan = try LazyFilePlan.loadRootfs(rootfs, home: home) else { return }
        let paths = LazyFilePaths(home: home, rootfs: rootfs)
        // The fill may have finished while nobody looked: the blob is then whole.
        guard (try? FileManager.default.destinationOfSymbolicLink(atPath: BlobStore(home: home).url(for: rootfs).path)) == paths.servedFile.path else { return }
        try requireRootForLazy(what: "root filesystem \(rootfs.short)", plan: plan)
        try ensureServed(paths, lock: .lazyServer(paths.directory.lastPathComponent), arguments: ["--rootfs", rootfs.description], what: "root filesystem \(rootfs.short)")
    }

    private func requireRootForLazy(what: String, plan: LazyFilePlan) throws {
        guard geteuid() == 0 else {
            throw EngineError.unsupported(
                "\(what) is still being fetched lazily, and its FUSE server needs clade running as root (a confined QEMU of another uid must open the mount); run `clade pull --force \(plan.reference)` as root to fetch it whole, or fork as root")
        }
    }

    /// Starts the server of `paths` detached unless one serves there, and waits until it mounts.
    private func ensureServed(_ paths: LazyFilePaths, lock name: LockName, arguments: [String], what: String) throws {
        if LazyFileServer.isServing(paths) { return }
        let lock = try FileLock(home: home, name)
        defer { lock.unlock() }
        if LazyFileServer.isServing(paths) { return }
        try FileManager.default.createDirectory(at: paths.directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        // A server left by an earlier run leaves its counters; this one writes its own.
        try? FileSystem.remove(paths.statistics)
        let pid = try DetachedLauncher.start(Self.cladeExecutable(), arguments: ["lazy-serve", "-v", "--home", home.root.path] + arguments, log: paths.log)
        logger.info("started a lazy file server", metadata: ["serving": "\(what)", "pid": "\(pid)"])
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if LazyFileServer.isServing(paths) { return }
            if kill(pid, 0) != 0, errno == ESRCH { break }
            usleep(10_000)
        }
        let log = (try? String(contentsOf: paths.log, encoding: .utf8)) ?? ""
        throw EngineError.unsupported("the lazy server of \(what) did not mount \(paths.mountPoint.path) (see `clade doctor` for FUSE): \(log.suffix(600))")
    }

    /// Waits until the server has prefetched the working set (when the pack recorded one), so
    /// children start with it in the page cache. A prefetch that outlasts the bound is left to
    /// finish on its own: faults fetch whatever it has not.
    func awaitPrefetch(_ paths: LazyFilePaths, plan: LazyFilePlan, bound: TimeInterval = 300) throws {
        guard !(plan.workingSet ?? []).isEmpty else { return }
        let deadline = Date().addingTimeInterval(bound)
        while Date() < deadline {
            if let statistics = try? JSONFiles.read(LazyFileStatistics.self, from: paths.statistics), statistics.prefetchDone == true { return }
            if !LazyFileServer.isServing(paths) { return }
            usleep(10_000)
        }
        logger.warning("the working-set prefetch is still running; starting children anyway", metadata: ["snapshot": "\(plan.snapshotID)"])
    }

    /// Completes a lazily pulled snapshot (an eager `clade pull` of a snapshot the store holds
    /// lazily): makes sure the servers of its memory and its root filesystem serve them, asks
    /// their fills to try at once, and waits until both files are the store's own. Fails, saying
    /// why, once no chunk has arrived for `stallSeconds`; whatever arrived stays for the next
    /// try. Returns the bytes the servers fetched meanwhile (as far as their counters tell: a
    /// server restarted meanwhile counts anew).
    @discardableResult
    func completeLazySnapshot(tag: String, stallSeconds: TimeInterval = 60, progress: (@Sendable (Int, Int) -> Void)? = nil) async throws -> Int64 {
        let directory = snapshotCatalog.directory(tag)
        guard let metadata = try snapshotCatalog.get(tag) else { return 0 }
        var fetched: Int64 = 0
        if let plan = try LazyFilePlan.load(in: directory) {
            fetched += try await awaitCompletion(
                LazyFilePaths(home: home, snapshotID: plan.snapshotID), plan: plan, what: "the memory of snapshot '\(tag)'", stallSeconds: stallSeconds, progress: progress,
                start: { try self.ensureLazyMemoryServed(metadata, plan: plan) }, done: { try LazyFilePlan.load(in: directory) == nil })
        }
        if let plan = try LazyFilePlan.loadRootfs(metadata.rootfs, home: home) {
            let blob = BlobStore(home: home).url(for: metadata.rootfs)
            fetched += try await awaitCompletion(
                LazyFilePaths(home: home, rootfs: metadata.rootfs), plan: plan, what: "the root filesystem of snapshot '\(tag)'", stallSeconds: stallSeconds,
                progress: progress, start: { try self.ensureLazyRootfsServed(metadata.rootfs) },
                done: { try FileSystem.status(of: blob)?.isRegularFile == true })
        }
        return fetched
    }

    /// Keeps the server of `paths` serving and its fill kicked until `done`; returns the bytes it
    /// fetched meanwhile.
    private func awaitCompletion(
        _ paths: LazyFilePaths, plan: LazyFilePlan, what: String, stallSeconds: TimeInterval, progress: (@Sendable (Int, Int) -> Void)?,
        start: () throws -> Void, done: () throws -> Bool
    ) async throws -> Int64 {
        if try done() { return 0 }
        try start()
        let fetchedBefore = (try? JSONFiles.read(LazyFileStatistics.self, from: paths.statistics))?.bytesFetched ?? 0
        var fetchedLast = fetchedBefore
        var kicked = false
        var lastPresent = -1
        var lastProgress = Date()
        while try !done() {
            if !LazyFileServer.isServing(paths) {
                // It left (idle after failing passes, or died): a new server starts a new fill.
                try start()
                kicked = false
            }
            if !kicked, let pid = ProcessControl.readPidFile(paths.pidFile), kill(pid, SIGUSR1) == 0 { kicked = true }
            let statistics = try? JSONFiles.read(LazyFileStatistics.self, from: paths.statistics)
            if let statistics { fetchedLast = statistics.bytesFetched }
            if let statistics, statistics.chunksPresent != lastPresent {
                lastPresent = statistics.chunksPresent
                lastProgress = Date()
                progress?(statistics.chunksPresent, statistics.chunks)
            }
            if Date().timeIntervalSince(lastProgress) > stallSeconds {
                throw PackError.registry(
                    "\(what) stopped arriving from \(plan.reference): no chunk in \(Int(stallSeconds)) s (\(max(lastPresent, 0)) of \(plan.chunks.count) are in; \(statistics?.failure ?? "no failure reported")); what arrived is kept, so run `clade pull \(plan.reference)` again once the registry answers")
            }
            try await Task.sleep(nanoseconds: 200_000_000)
        }
        return max(0, fetchedLast - fetchedBefore)
    }

    /// The `clade` executable beside this process's own (the CLI, the daemon and the containerd
    /// shim are installed together), or `$CLADE_EXECUTABLE`.
    static func cladeExecutable() -> URL {
        if let given = ProcessInfo.processInfo.environment["CLADE_EXECUTABLE"], !given.isEmpty { return URL(fileURLWithPath: given) }
        let own = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return own.lastPathComponent == "clade" ? own : own.deletingLastPathComponent().appendingPathComponent("clade", isDirectory: false)
    }
}

extension Sandboxes {
    /// Why a sandbox forked from a lazily pulled snapshot died, when a server of its memory or
    /// root filesystem could not fetch or verify a chunk it needed (the server then stopped its
    /// QEMU, which logs nothing). A caller that holds the sandbox's `record` passes it, which
    /// spares reading it again.
    func lazyMemoryFailure(sandbox id: String, record: SandboxRecord? = nil) -> String? {
        lazyMemoryFailureReason(sandbox: id, record: record).map { "part of its snapshot could not be fetched lazily, so its VM stopped: \($0)" }
    }

    /// Why sandbox `id` can no longer read its memory or disk, when a FUSE server that serves it
    /// is gone (killed, or crashed); nil while they serve, or for a sandbox whose files are local.
    func lazyServerLost(sandbox id: String, record: SandboxRecord? = nil) -> String? {
        for directory in lazyServerDirectories(sandbox: id, record: record) where !LazyFileServer.isServing(LazyFilePaths(directory: directory)) {
            let paths = LazyFilePaths(directory: directory)
            return "the FUSE server that served its \(paths.servesRootfs ? "root filesystem" : "memory") lazily stopped (see \(directory.path)/server.log), so the rest could not be read and its VM was stopped; the snapshot's next fork starts a new server"
        }
        return nil
    }

    /// The last chunk failure of a lazy server whose file sandbox `id` uses.
    func lazyMemoryFailureReason(sandbox id: String, record: SandboxRecord? = nil) -> String? {
        for directory in lazyServerDirectories(sandbox: id, record: record) {
            if let reason = try? String(contentsOf: LazyFilePaths(directory: directory).failure, encoding: .utf8) {
                return reason.trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }
        return nil
    }

    /// The lazy memory server directory (`lazy/<snapshot id>/`) whose file sandbox `id` maps,
    /// or nil when its memory is local.
    func lazyServerDirectory(sandbox id: String) -> URL? {
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: sandboxCatalog.paths(id).memory.path), target.hasSuffix("/mnt/memory") else {
            return nil
        }
        return URL(fileURLWithPath: target, isDirectory: false).deletingLastPathComponent().deletingLastPathComponent()
    }

    /// The server directories whose files sandbox `id` uses: its memory's, and its root
    /// filesystem's while that is still served lazily. `record`, when the caller has it, names
    /// the root filesystem without another read of the catalog.
    func lazyServerDirectories(sandbox id: String, record: SandboxRecord? = nil) -> [URL] {
        var directories = lazyServerDirectory(sandbox: id).map { [$0] } ?? []
        if let rootfs = record.map(\.rootfs) ?? (try? sandboxCatalog.get(id))?.rootfs,
            let target = try? FileManager.default.destinationOfSymbolicLink(atPath: BlobStore(home: home).url(for: rootfs).path), target.hasSuffix("/mnt/rootfs")
        {
            directories.append(URL(fileURLWithPath: target, isDirectory: false).deletingLastPathComponent().deletingLastPathComponent())
        }
        return directories
    }
}

extension Engine {
    /// What lazy forks from a registry need: root (the FUSE mount must admit confined VMMs of
    /// other uids) and /dev/fuse. A host without them still pulls snapshots whole.
    func lazyForkCheck() -> DoctorCheck {
        guard geteuid() == 0 else {
            return DoctorCheck(
                name: "lazy forks", status: .warning, detail: "not as this user: the FUSE mount that serves memory must admit confined VMMs of other uids, which needs root",
                fix: "run clade as root for `clade fork REGISTRY/REPO:TAG`; otherwise `clade pull` fetches snapshots whole")
        }
        guard access("/dev/fuse", R_OK | W_OK) == 0 else {
            return DoctorCheck(
                name: "lazy forks", status: .warning, detail: "/dev/fuse is missing or not usable (\(String(cString: strerror(errno))))",
                fix: "modprobe fuse (or give the container /dev/fuse); until then `clade pull` fetches snapshots whole")
        }
        return DoctorCheck(name: "lazy forks", status: .ok, detail: "/dev/fuse is usable; forks from a registry fetch memory on demand")
    }
}
