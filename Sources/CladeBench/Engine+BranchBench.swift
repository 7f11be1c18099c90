import CladeEngine
import CladeModel
import CladeStore
import Foundation

/// The result of `clade bench branch`, all on one sandbox in one run.
public struct BranchBenchReport: Codable, Sendable {
    public var memoryMiB: Int
    public var dirtiedMiB: Int
    public var branches: [String: BranchReport]
    /// Live, diff and full branches of forks that keep writing, by `busy<percent>_<mode>`.
    public var busy: [String: BusyBranchFigures]
    public var standbyMilliseconds: Double
    public var resumeMilliseconds: Double
    /// Named ratios; the target is `dirty: diff pause / full pause` ≤ 0.1.
    public var ratios: [String: Double]

    enum CodingKeys: String, CodingKey {
        case branches, ratios, busy
        case memoryMiB = "memory_mib"
        case dirtiedMiB = "dirtied_mib"
        case standbyMilliseconds = "standby_ms"
        case resumeMilliseconds = "resume_ms"
    }
}

extension Engine {
    /// Full vs diff branch (pause window, total) of an idle fork and of the same fork after it
    /// dirtied ~10% of its RAM; live vs diff vs full on forks that dirtied 10% and 50% and keep
    /// writing (`rounds` each); then a standby + resume round trip.
    public func benchBranch(memoryMiB: Int = 512, rounds: Int = 3, progress: @Sendable (String) -> Void = { _ in }) async throws -> BranchBenchReport {
        let tag = "benchbr-\(Names.newSandboxID())"
        progress("baking \(tag)")
        _ = try await snapshots.bake(BakeOptions(boot: BootOptions(memoryMiB: memoryMiB), tag: tag))
        do {
            var report = try await runBranchBench(tag: tag, memoryMiB: memoryMiB, progress: progress)
            report.busy = try await benchBusyBranches(tag: tag, memoryMiB: memoryMiB, rounds: rounds, progress: progress)
            for percent in [10, 50] {
                func pause(_ mode: BranchMode) -> Double { report.busy["busy\(percent)_\(mode.rawValue)"]?.pauseP50Milliseconds ?? .nan }
                report.ratios["busy \(percent)%: live pause / diff pause (p50)"] = pause(.live) / pause(.diff)
                report.ratios["busy \(percent)%: live pause / full pause (p50)"] = pause(.live) / pause(.full)
            }
            _ = try? await snapshots.remove(tag, cascade: true)
            return report
        } catch {
            _ = try? await snapshots.remove(tag, cascade: true)
            throw error
        }
    }

    private func runBranchBench(tag: String, memoryMiB: Int, progress: @Sendable (String) -> Void) async throws -> BranchBenchReport {
        guard let child = try await forks.fork(tag: tag, count: 1).first?.record else {
            throw EngineError.guestFailed("the benchmark fork failed; see `clade fork \(tag)` for the reason")
        }
        var branches: [String: BranchReport] = [:]
        for mode in [BranchMode.diff, .full] {
            progress("idle fork: \(mode.rawValue) branch")
            branches["idle_\(mode.rawValue)"] = try await self.branches.branch(id: child.id, tag: "\(tag)-idle-\(mode.rawValue)", mode: mode).1
        }
        let dirtied = max(1, memoryMiB / 10)
        progress("dirtying \(dirtied) MiB of guest RAM")
        let written = try await sandboxes.exec(id: child.id, argv: ["sh", "-c", "head -c \(dirtied << 20) /dev/urandom > /tmp/dirty && echo ok"], timeout: 300)
        guard written.stdout == "ok\n" else { throw EngineError.guestFailed("could not dirty guest memory: \(written.stderr ?? written.error ?? "")") }
        for mode in [BranchMode.diff, .full] {
            progress("dirty fork: \(mode.rawValue) branch")
            branches["dirty_\(mode.rawValue)"] = try await self.branches.branch(id: child.id, tag: "\(tag)-dirty-\(mode.rawValue)", mode: mode).1
        }
        progress("standby + resume")
        let standbyStart = Date()
        _ = try await standby.enter(id: child.id)
        let standbyMilliseconds = Date().timeIntervalSince(standbyStart) * 1000
        let resumeStart = Date()
        _ = try await standby.resume(id: child.id)
        let resumeMilliseconds = Date().timeIntervalSince(resumeStart) * 1000
        try? await sandboxes.kill(id: child.id)
        func ratio(_ a: String, _ b: String) -> Double {
            guard let top = branches[a]?.pauseMilliseconds, let bottom = branches[b]?.pauseMilliseconds, bottom > 0 else { return .nan }
            return top / bottom
        }
        return BranchBenchReport(
            memoryMiB: memoryMiB, dirtiedMiB: dirtied, branches: branches, busy: [:], standbyMilliseconds: standbyMilliseconds,
            resumeMilliseconds: resumeMilliseconds,
            ratios: ["idle: diff pause / full pause": ratio("idle_diff", "idle_full"), "dirty: diff pause / full pause": ratio("dirty_diff", "dirty_full")])
    }
}
