import ArgumentParser
import CladeEngine
import CladePack
import CladeStore
import Foundation

struct PackCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pack", abstract: "Write a snapshot (and its ancestors) as a portable OCI image layout, a directory or a .tar file.")
    @OptionGroup var global: GlobalOptions
    @Option(name: [.short, .customLong("output")], help: "Layout directory (created, or added to), or a file ending in .tar.") var output: String
    @Flag(help: "Pack only this snapshot, not its ancestors (it still carries every disk layer it needs).") var noAncestors = false
    @Option(help: "zstd level (1-19).") var level: Int32 = 3
    @Flag(help: "Print the report as JSON.") var json = false
    @Argument(help: "Snapshot tag.") var tag: String

    func validate() throws {
        guard (1...19).contains(level) else { throw ValidationError("--level must be between 1 and 19") }
    }

    func run() async throws {
        let progress = ProgressReporter(quiet: json)
        let report = try await global.makeEngine().packs.pack(tag: tag, ancestors: !noAncestors, to: URL(fileURLWithPath: output), level: level) { step, done, total in
            progress.update(step, done: done, total: total)
        }
        progress.finish()
        if json { return try printJSON(report) }
        print("packed \(report.snapshots.joined(separator: " → ")) into \(report.path)")
        print("PIECE          SNAPSHOT          BLOBS   CONTENT      PACKED       RATIO   NEW")
        for piece in report.pieces where piece.kind != "config" {
            print(piece.kind.padding(toLength: 15, withPad: " ", startingAt: 0)
                + piece.snapshot.padding(toLength: 18, withPad: " ", startingAt: 0)
                + "\(piece.blobs)".padding(toLength: 8, withPad: " ", startingAt: 0)
                + formatBytes(piece.contentBytes).padding(toLength: 13, withPad: " ", startingAt: 0)
                + formatBytes(piece.packedBytes).padding(toLength: 13, withPad: " ", startingAt: 0)
                + String(format: "%6.1f×  ", piece.ratio) + formatBytes(piece.newBytes))
        }
        let ratio = report.packedBytes > 0 ? Double(report.contentBytes) / Double(report.packedBytes) : 0
        print("total: \(formatBytes(report.contentBytes)) → \(formatBytes(report.packedBytes)) (\(String(format: "%.1f", ratio))×), \(formatBytes(report.newBytes)) new, in \(String(format: "%.2f", report.seconds)) s (\(formatBytes(Int64(report.throughput)))/s)")
        print("manifest: \(report.manifest)")
    }
}

struct UnpackCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unpack", abstract: "Verify a pack (directory or .tar) and register its snapshot in this store.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Register the snapshot under this tag instead of its own.") var tag: String?
    @Option(help: "Which snapshot of a pack holding several (its tag in the pack).") var ref: String?
    @Flag(help: "Replace a snapshot that already has the tag.") var force = false
    @Flag(help: "Print the report as JSON.") var json = false
    @Argument(help: "Pack directory or .tar file.") var path: String

    func run() async throws {
        let progress = ProgressReporter(quiet: json)
        let report = try await global.makeEngine().packs.unpack(from: URL(fileURLWithPath: path), options: UnpackOptions(tag: tag, force: force, ref: ref)) { step, done, total in
            progress.update(step, done: done, total: total)
        }
        progress.finish()
        if json { return try printJSON(report) }
        print("unpacked \(report.tag): \(report.blobsWritten) blobs written, \(report.blobsSkipped) already present, \(formatBytes(report.bytesWritten)) in \(String(format: "%.2f", report.seconds)) s")
        if !report.alreadyPresent.isEmpty { print("ancestors already here: \(report.alreadyPresent.joined(separator: ", "))") }
    }
}

/// Registry address and login options shared by push and pull.
struct RegistryOptions: ParsableArguments {
    @Flag(help: "Talk plain HTTP (for a registry on localhost without TLS).") var insecure = false
    @Option(help: "Registry user (default: $CLADE_REGISTRY_USERNAME).") var username: String?
    @Flag(help: "Read the registry password from standard input (default: $CLADE_REGISTRY_PASSWORD).") var passwordStdin = false

    func credentials() throws -> RegistryCredentials? {
        let environment = ProcessInfo.processInfo.environment
        guard let user = username ?? environment["CLADE_REGISTRY_USERNAME"] else { return nil }
        var password = environment["CLADE_REGISTRY_PASSWORD"] ?? ""
        if passwordStdin {
            password = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
                .trimmingCharacters(in: .newlines)
        }
        return RegistryCredentials(username: user, password: password)
    }
}

struct PushCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "push", abstract: "Upload a snapshot (and its ancestors) to an OCI registry; blobs it already has are skipped.")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "Push only this snapshot, not its ancestors.") var noAncestors = false
    @Flag(help: "Print the report as JSON.") var json = false
    @Argument(help: "Snapshot tag.") var tag: String
    @Argument(help: "Registry reference, HOST[:PORT]/REPOSITORY:TAG.") var reference: String

    func run() async throws {
        let target = try RegistryReference(parsing: reference)
        let progress = ProgressReporter(quiet: json)
        let access = RegistryAccess(insecure: registry.insecure, credentials: try registry.credentials())
        let report = try await global.makeEngine().packs.push(tag: tag, ancestors: !noAncestors, to: target, access: access) { step, done, total in
            progress.update(step, done: done, total: total)
        }
        progress.finish()
        if json { return try printJSON(report) }
        let sent = report.uploaded.values.reduce(0, +)
        let kept = report.skipped.values.reduce(0, +)
        print("pushed \(tag) to \(report.reference): \(report.blobsUploaded) blobs (\(formatBytes(sent))) uploaded, \(report.blobsSkipped) (\(formatBytes(kept))) already there, in \(String(format: "%.2f", report.seconds)) s")
        print("manifest: \(report.manifest)")
    }
}

struct PullCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull", abstract: "Download a snapshot from an OCI registry (only blobs this store lacks), verify it, and register it.")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var registry: RegistryOptions
    @Option(help: "Register the snapshot under this tag instead of its own.") var tag: String?
    @Flag(help: "Replace a snapshot that already has the tag.") var force = false
    @Flag(help: "Leave the snapshot's memory in the registry: forks fetch each chunk when their guest first touches it, and a background fill completes the pull.")
    var lazy = false
    @Flag(help: "Print the report as JSON.") var json = false
    @Argument(help: "Registry reference, HOST[:PORT]/REPOSITORY:TAG or @sha256:DIGEST.") var reference: String

    func run() async throws {
        let source = try RegistryReference(parsing: reference)
        let progress = ProgressReporter(quiet: json)
        let access = RegistryAccess(insecure: registry.insecure, credentials: try registry.credentials())
        let report = try await global.makeEngine().packs.pull(source, options: UnpackOptions(tag: tag, force: force), access: access, lazyMemory: lazy) { step, done, total in
            progress.update(step, done: done, total: total)
        }
        progress.finish()
        if json { return try printJSON(report) }
        if report.upToDate { return print("\(report.tag) is already up to date with \(source)") }
        print("pulled \(report.tag): \(formatBytes(report.bytesDownloaded)) downloaded, \(report.blobsWritten) blobs written, \(report.blobsSkipped) already present, in \(String(format: "%.2f", report.seconds)) s")
    }
}
