#if canImport(Glibc)
import Glibc
#endif
import CladeModel
import CladePack
import CladeStore
import CladeVMM
import Foundation

extension Branches {
    /// Every branch reads a sandbox's whole memory (a diff branch copies its snapshot's file),
    /// so a sandbox whose memory is still arriving lazily has it fetched first, before anything
    /// touches the guest: the branch then holds the guest only when every chunk is here. A chunk
    /// that cannot be had fails the branch with the reason and leaves the guest as it was (were
    /// it held first, the guest could fault on the missing chunk and be stopped).
    func fetchLazyMemoryBeforeBranching(_ id: String, stallSeconds: TimeInterval = 30, progress: @Sendable (String) -> Void) async throws {
        guard let directory = engine.sandboxes.lazyServerDirectory(sandbox: id) else { return }
        let paths = LazyFilePaths(directory: directory)
        func read() -> LazyFileStatistics? { try? JSONFiles.read(LazyFileStatistics.self, from: paths.statistics) }
        guard read()?.complete != true else { return }
        guard LazyFileServer.isServing(paths), let pid = ProcessControl.readPidFile(paths.pidFile) else {
            throw EngineError.guestFailed(engine.sandboxes.lazyServerLost(sandbox: id) ?? "the lazy memory server of sandbox \(id) is not serving")
        }
        let kicked = Date()
        kill(pid, SIGUSR1)
        progress("fetching the rest of the memory of \(id) from the registry before branching")
        var present = -1
        var lastProgress = Date()
        while true {
            let statistics = read()
            if statistics?.complete == true { return }
            // A failure recorded after the kick is this fetch's, not an old one.
            if let failedAt = try? FileManager.default.attributesOfItem(atPath: paths.failure.path)[.modificationDate] as? Date,
                failedAt >= kicked.addingTimeInterval(-1),
                let reason = (try? String(contentsOf: paths.failure, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            {
                throw EngineError.guestFailed(
                    "sandbox \(id) could not be branched: part of its memory is still in the registry and could not be fetched lazily (\(reason)); it keeps running, untouched. Branch it again once the registry answers (`clade pull` of its snapshot completes the memory)")
            }
            if let count = statistics?.chunksPresent, count != present {
                present = count
                lastProgress = Date()
            }
            if Date().timeIntervalSince(lastProgress) > stallSeconds {
                throw EngineError.guestFailed(
                    "sandbox \(id) could not be branched: its memory stopped arriving from the registry (\(max(present, 0)) of \(statistics?.chunks ?? 0) chunks in, none for \(Int(stallSeconds)) s); it keeps running, untouched")
            }
            guard LazyFileServer.isServing(paths) else {
                throw EngineError.guestFailed(engine.sandboxes.lazyServerLost(sandbox: id) ?? "the lazy memory server of sandbox \(id) stopped")
            }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
    }
}
