import ArgumentParser
import CladeEngine
import CladeStore
import Foundation

struct GarbageCollect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Remove blobs and cached layers no image, snapshot or sandbox uses, and leftovers of dead clade processes.",
        discussion: "Refuses to run beside an image build, pull or any other operation in progress; a live fork of a removed snapshot keeps what it uses.")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Only report what would be removed.") var dryRun = false
    @Flag(help: "Print the report as JSON.") var json = false

    func run() async throws {
        let report = try await global.makeEngine().storage.collectGarbage(dryRun: dryRun)
        if json { return try printJSON(report) }
        let verb = dryRun ? "would free" : "freed"
        print("\(verb) \(formatBytes(report.bytes)): \(report.blobs.count) unused blobs, \(report.temporaries.count) leftovers")
    }
}

/// After a removal of what named `blobs`: how much `clade gc` would now free of them, on stderr
/// (stdout stays parseable).
func reportReclaimable(_ engine: Engine, of blobs: Set<Digest>) {
    let bytes = engine.storage.reclaimableBytes(of: blobs)
    guard bytes > 0 else { return }
    writeStandardError("\(formatBytes(bytes)) can now be freed with `clade gc`\n")
}
