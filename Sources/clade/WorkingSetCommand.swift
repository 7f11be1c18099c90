import ArgumentParser
import CladeEngine
import Foundation

/// `clade record-working-set TAG`: what a fresh fork touches, kept for lazy forks elsewhere.
struct RecordWorkingSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "record-working-set",
        abstract: "Record which memory a fresh fork of a snapshot touches (pushed with it; lazy forks elsewhere prefetch it).")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON.") var json = false
    @Argument(help: "Snapshot tag.") var tag: String

    func run() async throws {
        let engine = await global.makeEngine()
        let report = try await engine.snapshots.recordWorkingSet(tag: tag)
        if json { return try printJSON(report) }
        let mib = Double(report.bytes) / 1_048_576
        print(String(format: "%@: a fresh fork touched %d of %d memory chunks (%.1f MiB) in %.1f s; push it to carry the record", report.tag, report.chunks, report.totalChunks, mib, report.seconds))
    }
}
