#if canImport(Glibc)
import Glibc
#endif
import CladeEngine
import CladeModel
import CladePack
import CladeStore
import CladeVMM
import Foundation

/// One way of getting children running on a host that lacks the snapshot.
public struct PullBenchArm: Codable, Sendable {
    /// From the start of the pull to the first child's first `exec` answer, and to the last's.
    public var firstAnswerSeconds: Double
    public var allAnswersSeconds: Double
    /// The pull alone: everything but the memory for the lazy arms (disk, kernel, initrd, device state).
    public var pullSeconds: Double
    /// Bytes taken from the registry by the time the first answer came (pull plus FUSE server).
    public var bytesBeforeFirstAnswer: Int64
    /// Memory chunks guests waited on (lazy arms only).
    public var demandFetches: Int?
    /// Root filesystem chunks QEMU read before they had arrived (lazy arms of a framed rootfs).
    public var rootfsDemandFetches: Int?
    /// With `--eval`: to the first child's first answer from its resident interpreter, and the last's.
    public var firstEvalSeconds: Double?
    public var allEvalsSeconds: Double?

    enum CodingKeys: String, CodingKey {
        case pullSeconds = "pull_s"
        case firstAnswerSeconds = "first_answer_s"
        case allAnswersSeconds = "all_answers_s"
        case bytesBeforeFirstAnswer = "bytes_before_first_answer"
        case demandFetches = "demand_fetches"
        case rootfsDemandFetches = "rootfs_demand_fetches"
        case firstEvalSeconds = "first_eval_s"
        case allEvalsSeconds = "all_evals_s"
    }
}

/// The result of `clade bench pull`: children of a snapshot the store lacks, by a whole pull
/// then a fork, by a lazy fork, and by a lazy fork that prefetches the recorded working set,
/// each into an empty store, in one run against one registry.
public struct PullBenchReport: Codable, Sendable {
    public var registry: String
    public var children: Int
    public var memoryMiB: Int
    public var workingSetChunks: Int
    public var arms: [String: PullBenchArm]
    /// Whole pull's time to first answer over each lazy arm's (above 1: the lazy arm is faster).
    public var ratios: [String: Double]

    enum CodingKeys: String, CodingKey {
        case registry, children, arms, ratios
        case memoryMiB = "memory_mib"
        case workingSetChunks = "working_set_chunks"
    }
}

extension Engine {
    /// Bakes (or takes `tag`), records its working set, pushes it to `registry`, and measures
    /// the three ways of starting `count` children in stores that have none of it.
    public func benchPull(
        registry: String, insecure: Bool, count: Int, memoryMiB: Int, tag given: String?, eval code: String? = nil, progress: @Sendable (String) -> Void = { _ in }
    ) async throws -> PullBenchReport {
        guard geteuid() == 0 else { throw EngineError.unsupported("`clade bench pull` compares lazy forks, which need clade running as root") }
        guard (1...16).contains(count) else { throw EngineError.badInput("-n must be between 1 and 16 (got \(count))") }
        let tag = given ?? "benchpl-\(Names.newSandboxID())"
        if given == nil {
            progress("baking \(tag)")
            _ = try await snapshots.bake(BakeOptions(boot: BootOptions(memoryMiB: memoryMiB), tag: tag))
        }
        progress("recording the working set of \(tag)")
        let recorded = try await snapshots.recordWorkingSet(tag: tag)
        let reference = try RegistryReference(parsing: "\(registry)/clade-bench/pull:\(tag)")
        progress("pushing \(tag) to \(reference)")
        _ = try await packs.push(tag: tag, to: reference, access: RegistryAccess(insecure: insecure))
        let metadata = try snapshotCatalog.require(tag)

        var arms: [String: PullBenchArm] = [:]
        do {
            for arm in ["pull_then_fork", "lazy", "lazy_prefetch"] {
                progress("\(arm): \(count) children in an empty store")
                arms[arm] = try await measurePullArm(arm, reference: reference, insecure: insecure, count: count, eval: code)
            }
        } catch {
            if given == nil { _ = try? await snapshots.remove(tag, cascade: true) }
            throw error
        }
        if given == nil { _ = try? await snapshots.remove(tag, cascade: true) }
        func ratio(_ arm: String) -> Double {
            guard let whole = arms["pull_then_fork"]?.firstAnswerSeconds, let other = arms[arm]?.firstAnswerSeconds, other > 0 else { return 0 }
            return whole / other
        }
        return PullBenchReport(
            registry: registry, children: count, memoryMiB: metadata.machine.memoryMiB, workingSetChunks: recorded.chunks, arms: arms,
            ratios: [
                "first_answer_pull_then_fork_vs_lazy (above 1: lazy is faster)": ratio("lazy"),
                "first_answer_pull_then_fork_vs_lazy_prefetch (above 1: lazy is faster)": ratio("lazy_prefetch"),
            ])
    }

    private func measurePullArm(_ arm: String, reference: RegistryReference, insecure: Bool, count: Int, eval code: String?) async throws -> PullBenchArm {
        // A store of its own beside this one, not inside its private temporary directory: a
        // confined QEMU (another uid) must be able to reach its files.
        let root = home.root.deletingLastPathComponent().appendingPathComponent(".clade-benchpull-\(arm)-\(Names.newSandboxID())", isDirectory: true)
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        let receiver = Engine(home: CladeHome(root: root), backend: backend, logger: logger, allowsWeakerIsolation: allowsWeakerIsolation)
        let children = Locked<[String]>([])
        do {
            let arm = try await runPullArm(arm, receiver: receiver, reference: reference, insecure: insecure, count: count, eval: code, children: children)
            await Self.dismantle(receiver, children: children.withLock { $0 }, root: root)
            return arm
        } catch {
            await Self.dismantle(receiver, children: children.withLock { $0 }, root: root)
            throw error
        }
    }

    private func runPullArm(
        _ arm: String, receiver: Engine, reference: RegistryReference, insecure: Bool, count: Int, eval code: String?, children launched: Locked<[String]>
    ) async throws -> PullBenchArm {
        let started = Date()
        let lazy = arm != "pull_then_fork"
        let pulled = try await receiver.packs.pull(reference, access: RegistryAccess(insecure: insecure), lazyMemory: lazy)
        let pullSeconds = Date().timeIntervalSince(started)
        try receiver.forks.serveLazyMemory(tag: pulled.tag, prefetch: arm == "lazy_prefetch")
        let outcomes = try await receiver.forks.fork(tag: pulled.tag, count: count)
        let children = outcomes.compactMap { $0.record?.id }
        launched.withLock { $0 = children }
        guard children.count == count else {
            throw EngineError.guestFailed("\(arm): \(count - children.count) of \(count) children failed: \(outcomes.compactMap(\.error).first ?? "")")
        }
        let first = Locked<(Double, Int64)?>(nil)
        let evals = Locked<[Double]>([])
        let metadata = try receiver.snapshotCatalog.require(pulled.tag)
        let statistics = LazyFilePaths(home: receiver.home, snapshotID: metadata.id).statistics
        let rootfsStatistics = LazyFilePaths(home: receiver.home, rootfs: metadata.rootfs).statistics
        @Sendable func read(_ file: URL) -> LazyFileStatistics? { try? JSONFiles.read(LazyFileStatistics.self, from: file) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for id in children {
                group.addTask {
                    _ = try await receiver.sandboxes.exec(id: id, argv: ["true"], timeout: 300)
                    let elapsed = Date().timeIntervalSince(started)
                    let served = lazy ? (read(statistics)?.bytesFetched ?? 0) + (read(rootfsStatistics)?.bytesFetched ?? 0) : 0
                    first.withLock { if $0 == nil { $0 = (elapsed, served) } }
                    if let code {
                        let result = try await receiver.processes.eval(id: id, code: code, timeout: 300)
                        if let error = result.error { throw EngineError.guestFailed("eval in \(id) raised: \(error)") }
                        let evaluated = Date().timeIntervalSince(started)
                        evals.withLock { $0.append(evaluated) }
                    }
                }
            }
            try await group.waitForAll()
        }
        let all = Date().timeIntervalSince(started)
        let (firstSeconds, served) = first.withLock { $0 } ?? (all, 0)
        let demand = lazy ? read(statistics)?.demandFetches : nil
        let rootfsDemand = lazy ? read(rootfsStatistics)?.demandFetches : nil
        let evaluated = evals.withLock { $0 }
        return PullBenchArm(
            firstAnswerSeconds: firstSeconds, allAnswersSeconds: all, pullSeconds: pullSeconds, bytesBeforeFirstAnswer: pulled.bytesDownloaded + served, demandFetches: demand,
            rootfsDemandFetches: rootfsDemand, firstEvalSeconds: evaluated.min(), allEvalsSeconds: evaluated.max())
    }

    /// Kills the arm's children, unmounts its FUSE server (which then exits) and removes its store.
    private static func dismantle(_ receiver: Engine, children: [String], root: URL) async {
        for id in children { try? await receiver.sandboxes.kill(id: id) }
        let lazy = root.appendingPathComponent("lazy", isDirectory: true)
        var servers: [Int32] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: lazy.path)) ?? [] {
            let paths = LazyFilePaths(directory: lazy.appendingPathComponent(entry, isDirectory: true))
            if let pid = ProcessControl.readPidFile(paths.pidFile) { servers.append(pid) }
            umount2(paths.mountPoint.path, Int32(MNT_DETACH))
        }
        // A server whose mount is gone still writes its last statistics and log as it stops:
        // removing the store under it could leave those behind (seen once in CI).
        for pid in servers where !(await ProcessControl.waitForExit(pid, marker: "lazy-serve", timeout: 10)) {
            ProcessControl.forceKill(pid, marker: "lazy-serve")
            _ = await ProcessControl.waitForExit(pid, marker: "lazy-serve", timeout: 5)
        }
        try? FileSystem.remove(root)
    }
}
