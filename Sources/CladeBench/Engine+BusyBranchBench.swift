import CladeEngine
import CladeModel
import CladeStore
import Foundation

/// Pause and total time of one branch mode on a fork that keeps writing.
public struct BusyBranchFigures: Codable, Sendable {
    public var mode: BranchMode
    public var dirtyPercent: Int
    public var pauseP50Milliseconds: Double
    public var pauseP90Milliseconds: Double
    public var totalP50Milliseconds: Double
    public var rounds: Int

    enum CodingKeys: String, CodingKey {
        case mode, rounds
        case dirtyPercent = "dirty_percent"
        case pauseP50Milliseconds = "pause_p50_ms"
        case pauseP90Milliseconds = "pause_p90_ms"
        case totalP50Milliseconds = "total_p50_ms"
    }
}

extension Engine {
    /// Live, diff and full branches of forks that dirtied `percents` of their RAM and keep
    /// writing in the background, `rounds` of each, modes interleaved so drift hits all alike.
    /// Each branch's snapshot is removed at once, so the disk holds one at a time.
    func benchBusyBranches(tag: String, memoryMiB: Int, percents: [Int] = [10, 50], rounds: Int = 3, progress: @Sendable (String) -> Void) async throws -> [String: BusyBranchFigures] {
        var figures: [String: BusyBranchFigures] = [:]
        for percent in percents {
            // Placed as the HTTP APIs place sandboxes: in RAM where that allows live branches.
            guard let child = try await forks.fork(tag: tag, count: 1, memoryOrder: forks.serviceMemoryOrder).first?.record else {
                throw EngineError.guestFailed("the benchmark fork failed; see `clade fork \(tag)` for the reason")
            }
            do {
                try await figures.merge(busyArm(child: child.id, tag: tag, memoryMiB: memoryMiB, percent: percent, rounds: rounds, progress: progress)) { $1 }
                try? await sandboxes.kill(id: child.id)
            } catch {
                try? await sandboxes.kill(id: child.id)
                throw error
            }
        }
        return figures
    }

    private func busyArm(child: String, tag: String, memoryMiB: Int, percent: Int, rounds: Int, progress: @Sendable (String) -> Void) async throws -> [String: BusyBranchFigures] {
        var figures: [String: BusyBranchFigures] = [:]
        let dirty = memoryMiB * percent / 100
        progress("dirtying \(percent)% (\(dirty) MiB) and starting a background writer")
        // A tmpfs larger than the default half of RAM holds the 50% case; the writer rewrites
        // 4 MiB over and over, so pages are dirtied throughout every copy.
        let script = """
            mkdir -p /run/bench && mount -t tmpfs -o size=\(memoryMiB * 9 / 10)m tmpfs /run/bench && \
            head -c \(dirty << 20) /dev/urandom > /run/bench/fill && \
            (while :; do dd if=/dev/urandom of=/run/bench/bg bs=1M count=4 conv=notrunc 2>/dev/null; done) </dev/null >/dev/null 2>&1 &
            sleep 1; echo ok
            """
        let started = try await sandboxes.exec(id: child, argv: ["sh", "-c", script], timeout: 600)
        guard started.stdout == "ok\n" else { throw EngineError.guestFailed("could not dirty guest memory: \(started.stderr ?? started.error ?? "")") }
        var reports: [BranchMode: [BranchReport]] = [:]
        let liveBlocker = try branches.liveCopyBlocker(sandboxCatalog.require(child))
        if let liveBlocker { progress("no live arm: \(liveBlocker)") }
        for round in 1...rounds {
            let modes: [BranchMode] = liveBlocker == nil ? [.live, .diff, .full] : [.diff, .full]
            for mode in modes {
                progress("\(percent)% dirty, writing: \(mode.rawValue) branch \(round)/\(rounds)")
                let branchTag = "\(tag)-busy\(percent)-\(mode.rawValue)-\(round)"
                reports[mode, default: []].append(try await branches.branch(id: child, tag: branchTag, mode: mode).1)
                _ = try? await snapshots.remove(branchTag)
            }
        }
        for (mode, list) in reports {
            let pauses = list.map(\.pauseMilliseconds).sorted()
            let totals = list.map(\.totalMilliseconds).sorted()
            figures["busy\(percent)_\(mode.rawValue)"] = BusyBranchFigures(
                mode: mode, dirtyPercent: percent, pauseP50Milliseconds: Self.percentile(pauses, 0.5),
                pauseP90Milliseconds: Self.percentile(pauses, 0.9), totalP50Milliseconds: Self.percentile(totals, 0.5), rounds: list.count)
        }
        return figures
    }

    /// Nearest-rank percentile of sorted values.
    static func percentile(_ sorted: [Double], _ fraction: Double) -> Double {
        guard !sorted.isEmpty else { return .nan }
        let rank = Int((fraction * Double(sorted.count)).rounded(.up))
        return sorted[min(sorted.count, max(1, rank)) - 1]
    }
}
