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
    func lazyMemoryPlan(_ metadata: SnapshotMetadata) throws -> LazyMemoryPlan? {
        try LazyMemoryPlan.load(in: snapshotCatalog.directory(metadata.tag))
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
    func ensureLazyMemoryServed(_ metadata: SnapshotMetadata, plan: LazyMemoryPlan, prefetch: Bool = true) throws {
        guard geteuid() == 0 else {
            throw EngineError.unsupported(
                "snapshot '\(metadata.tag)' is still being fetched lazily, and its FUSE server needs clade running as root (a confined QEMU of another uid must open the mount); run `clade pull --force \(plan.reference)` to fetch it whole, or fork as root")
        }
        let paths = LazyMemoryPaths(home: home, snapshotID: plan.snapshotID)
        if LazyMemoryServer.isServing(paths.mountPoint) { return try awaitPrefetch(paths, plan: plan) }
        let lock = try FileLock(home: home, .lazyServer(plan.snapshotID))
        defer { lock.unlock() }
        if LazyMemoryServer.isServing(paths.mountPoint) { return try awaitPrefetch(paths, plan: plan) }
        try FileManager.default.createDirectory(at: paths.directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        let executable = Self.cladeExecutable()
        // A server left by an earlier run leaves its counters; this one writes its own.
        try? FileSystem.remove(paths.statistics)
        let pid = try DetachedLauncher.start(
            executable, arguments: ["lazy-serve", "-v", "--home", home.root.path, metadata.tag] + (prefetch ? [] : ["--no-prefetch"]), log: paths.log)
        logger.info("started the lazy memory server", metadata: ["tag": "\(metadata.tag)", "pid": "\(pid)"])
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if LazyMemoryServer.isServing(paths.mountPoint) { return try awaitPrefetch(paths, plan: plan) }
            if kill(pid, 0) != 0, errno == ESRCH { break }
            usleep(10_000)
        }
        let log = (try? String(contentsOf: paths.log, encoding: .utf8)) ?? ""
        throw EngineError.unsupported(
            "the lazy memory server of snapshot '\(metadata.tag)' did not mount \(paths.mountPoint.path) (see `clade doctor` for FUSE): \(log.suffix(600))")
    }

    /// Waits until the server has prefetched the working set (when the pack recorded one), so
    /// children start with it in the page cache. A prefetch that outlasts the bound is left to
    /// finish on its own: faults fetch whatever it has not.
    func awaitPrefetch(_ paths: LazyMemoryPaths, plan: LazyMemoryPlan, bound: TimeInterval = 300) throws {
        guard !(plan.workingSet ?? []).isEmpty else { return }
        let deadline = Date().addingTimeInterval(bound)
        while Date() < deadline {
            if let statistics = try? JSONFiles.read(LazyMemoryStatistics.self, from: paths.statistics), statistics.prefetchDone == true { return }
            if !LazyMemoryServer.isServing(paths.mountPoint) { return }
            usleep(10_000)
        }
        logger.warning("the working-set prefetch is still running; starting children anyway", metadata: ["snapshot": "\(plan.snapshotID)"])
    }

    /// Completes a lazily pulled snapshot's memory (an eager `clade pull` of a snapshot the store
    /// holds lazily): makes sure its server serves it, asks its fill to try at once, and waits
    /// until the memory file is the snapshot's own. Fails, saying why, once no chunk has arrived
    /// for `stallSeconds`; whatever arrived stays for the next try. Returns the bytes the server
    /// fetched meanwhile (as far as its counters tell: a server restarted meanwhile counts anew).
    @discardableResult
    func completeLazyMemory(tag: String, stallSeconds: TimeInterval = 60, progress: (@Sendable (Int, Int) -> Void)? = nil) async throws -> Int64 {
        let directory = snapshotCatalog.directory(tag)
        guard let metadata = try snapshotCatalog.get(tag), let plan = try LazyMemoryPlan.load(in: directory) else { return 0 }
        try ensureLazyMemoryServed(metadata, plan: plan)
        let paths = LazyMemoryPaths(home: home, snapshotID: plan.snapshotID)
        let fetchedBefore = (try? JSONFiles.read(LazyMemoryStatistics.self, from: paths.statistics))?.bytesFetched ?? 0
        var fetchedLast = fetchedBefore
        var kicked = false
        var lastPresent = -1
        var lastProgress = Date()
        while try LazyMemoryPlan.load(in: directory) != nil {
            if !LazyMemoryServer.isServing(paths.mountPoint) {
                // It left (idle after failing passes, or died): a new server starts a new fill.
                try ensureLazyMemoryServed(metadata, plan: plan)
                kicked = false
            }
            if !kicked, let pid = ProcessControl.readPidFile(paths.pidFile), kill(pid, SIGUSR1) == 0 { kicked = true }
            let statistics = try? JSONFiles.read(LazyMemoryStatistics.self, from: paths.statistics)
            if let statistics { fetchedLast = statistics.bytesFetched }
            if let statistics, statistics.chunksPresent != lastPresent {
                lastPresent = statistics.chunksPresent
                lastProgress = Date()
                progress?(statistics.chunksPresent, statistics.chunks)
            }
            if Date().timeIntervalSince(lastProgress) > stallSeconds {
                throw PackError.registry(
                    "the memory of snapshot '\(tag)' stopped arriving from \(plan.reference): no chunk in \(Int(stallSeconds)) s (\(max(lastPresent, 0)) of \(plan.chunks.count) are in; \(statistics?.failure ?? "no failure reported")); what arrived is kept, so run `clade pull \(plan.reference)` again once the registry answers")
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
    /// Why a sandbox forked from a lazily pulled snapshot died, when its memory server could not
    /// fetch or verify a chunk it faulted on (the server then stopped its QEMU, which logs nothing).
    func lazyMemoryFailure(sandbox id: String) -> String? {
        lazyMemoryFailureReason(sandbox: id).map { "its memory could not be fetched lazily, so its VM stopped: \($0)" }
    }

    /// Why sandbox `id` can no longer read its memory, when it maps a lazily served file whose
    /// FUSE server is gone (killed, or crashed); nil while the server serves, or for a sandbox
    /// whose memory is local.
    func lazyServerLost(sandbox id: String) -> String? {
        guard let directory = lazyServerDirectory(sandbox: id) else { return nil }
        if LazyMemoryServer.isServing(LazyMemoryPaths(directory: directory).mountPoint) { return nil }
        return "the FUSE server that served its memory lazily stopped (see \(directory.path)/server.log), so the rest of its memory could not be read and its VM was stopped; the snapshot's next fork starts a new server"
    }

    /// The memory server's last chunk failure, when sandbox `id` maps a lazily served memory file.
    func lazyMemoryFailureReason(sandbox id: String) -> String? {
        guard let directory = lazyServerDirectory(sandbox: id),
            let reason = try? String(contentsOf: LazyMemoryPaths(directory: directory).failure, encoding: .utf8)
        else { return nil }
        return reason.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The lazy memory server directory (`lazy/<snapshot id>/`) whose file sandbox `id` maps,
    /// or nil when its memory is local.
    func lazyServerDirectory(sandbox id: String) -> URL? {
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: sandboxCatalog.paths(id).memory.path), target.hasSuffix("/mnt/memory") else {
            return nil
        }
        return URL(fileURLWithPath: target, isDirectory: false).deletingLastPathComponent().deletingLastPathComponent()
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
