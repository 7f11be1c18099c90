import ArgumentParser
import CladeEngine
import CladeModel
import CladePack
import CladeStore
import Foundation

struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot", abstract: "Capture a running (cold-booted) sandbox as a snapshot.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Tag of the new snapshot.") var tag: String
    @Flag(help: "Keep the sandbox running (as a fork of the new snapshot, same id and endpoint).") var keepRunning = false
    @Flag(help: "Print snapshot.json.") var json = false
    @Argument(help: "Sandbox id.") var id: String

    func run() async throws {
        let progress = ProgressReporter(quiet: json || !isInteractive)
        let metadata = try await global.makeEngine().snapshots.take(id: id, tag: tag, keepRunning: keepRunning) { progress.update($0) }
        progress.finish()
        if json { try printJSON(metadata) } else { print(metadata.tag) }
    }
}

struct Bake: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bake", abstract: "Boot an image, optionally warm it up, and snapshot it.")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var machine: MachineOptions
    @Option(help: "Tag of the new snapshot.") var tag: String
    @Option(help: "Shell command to run before the snapshot (e.g. start an interpreter), as the image's user.") var warm: String?
    @Option(help: "Run --warm as this user instead (e.g. root to install packages).") var warmUser: String?
    @Option(help: "A Python 3 executable to leave running in the snapshot for `clade eval` (e.g. python3).") var interpreter: String?
    @Option(help: "Code the resident interpreter runs before the snapshot (e.g. 'import numpy').") var preload: String?
    @Flag(help: "Print snapshot.json.") var json = false

    func run() async throws {
        let progress = ProgressReporter(quiet: json)
        let options = BakeOptions(boot: machine.boot, tag: tag, warm: warm, warmUser: warmUser, interpreter: interpreter, preload: preload)
        let metadata = try await global.makeEngine().snapshots.bake(options) { progress.update($0) }
        progress.finish()
        if json { try printJSON(metadata) } else { print(metadata.tag) }
    }
}

struct Snapshots: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "snapshots", abstract: "List snapshots.")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let list = try await global.makeEngine().snapshots.list()
        if json { return try printJSON(list) }
        print("TAG                 IMAGE         MEMORY   VCPUS  PARENT        CREATED")
        for snapshot in list {
            print(snapshot.tag.padding(toLength: 20, withPad: " ", startingAt: 0)
                + (snapshot.image ?? "-").padding(toLength: 14, withPad: " ", startingAt: 0)
                + "\(snapshot.machine.memoryMiB)MiB".padding(toLength: 9, withPad: " ", startingAt: 0)
                + "\(snapshot.machine.vcpus)".padding(toLength: 7, withPad: " ", startingAt: 0)
                + (snapshot.parent?.tag ?? "-").padding(toLength: 14, withPad: " ", startingAt: 0)
                + ISO8601DateFormatter().string(from: snapshot.createdAt))
        }
    }
}

struct SnapshotInfoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "snapshot-info", abstract: "Show a snapshot's metadata, sizes and dependents.")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON.") var json = false
    @Argument(help: "Snapshot tag.") var tag: String

    func run() async throws {
        let info = try await global.makeEngine().snapshots.info(tag)
        if json { return try printJSON(info) }
        let metadata = info.metadata
        print("tag:          \(metadata.tag) (\(metadata.id))")
        print("created:      \(ISO8601DateFormatter().string(from: metadata.createdAt))")
        print("machine:      \(metadata.machine.type), \(metadata.machine.vcpus) vCPU, \(metadata.machine.memoryMiB) MiB, \(metadata.machine.accelerator)")
        print("hypervisor:   \(metadata.hypervisor.name) \(metadata.hypervisor.version)")
        print("size:         \(info.logicalBytes) bytes logical, \(info.physicalBytes) bytes on disk")
        print("parent:       \(metadata.parent.map { "\($0.tag) (\($0.id))" } ?? "-")")
        print("sandboxes:    \(info.dependentSandboxes.isEmpty ? "-" : info.dependentSandboxes.joined(separator: ", "))")
        print("children:     \(info.childSnapshots.isEmpty ? "-" : info.childSnapshots.joined(separator: ", "))")
        print("ancestors:    \(info.ancestors.isEmpty ? "-" : info.ancestors.joined(separator: " ← "))")
        print("descendants:  \(info.descendants.isEmpty ? "-" : info.descendants.joined(separator: ", "))")
    }
}

/// One line of `fork --json`.
struct ForkView: Encodable {
    let id: String?
    let snapshotTag: String
    let agentEndpoint: String?
    let pid: Int32?
    let createdAt: Date?
    let generation: String?
    let milliseconds: Double
    let memory: String?
    let error: String?

    enum CodingKeys: String, CodingKey {
        case id, pid, generation, milliseconds, memory, error
        case snapshotTag = "snapshot_tag"
        case agentEndpoint = "agent_endpoint"
        case createdAt = "created_at"
    }
}

/// How `fork` places the snapshot's memory file in each child.
enum MemoryPlacement: String, ExpressibleByArgument, CaseIterable {
    /// Hardlink, falling back to reflink, sparse copy, copy (the default: no I/O, one page cache).
    case auto
    /// A reflink per child (its own inode sharing extents), falling back to sparse copy.
    case reflink
    /// A full copy per child (for comparison; what seed 003 replaced).
    case copy
    /// The snapshot's memory copied once onto tmpfs (the RAM tier) and shared by the children
    /// placed there; their memory can then be write-protected, so they can branch live.
    case ram

    var order: [MaterializeMethod] {
        switch self {
        case .auto: return Materializer.fanoutOrder
        case .reflink: return Materializer.privateCopyOrder
        case .copy: return [.copy]
        case .ram: return [.ramTier]
        }
    }
}

struct Fork: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fork", abstract: "Start sandboxes from a snapshot, in parallel.")
    @OptionGroup var global: GlobalOptions
    @Option(name: .short, help: "Number of children (1-\(Engine.maxForkCount)).") var n = 1
    @Option(help: "How each child gets the memory file: auto (hardlink first), reflink, copy, or ram (a shared copy on tmpfs, for live branches).") var memoryPlacement = MemoryPlacement.auto
    @OptionGroup var lifetime: LifetimeOptions
    @Option(help: "What the children may reach: none, outbound or allow:CIDR[:PORT],... (default: the snapshot's policy).")
    var network: NetworkPolicy?
    @OptionGroup var limits: LimitOptions
    @OptionGroup var registry: RegistryOptions
    @Flag(help: "For a snapshot whose memory is still in the registry: do not fetch its recorded working set before the children start.")
    var noPrefetch = false
    @Flag(help: "Print one JSON object per child.") var json = false
    @Argument(help: "Snapshot tag, or a registry reference HOST[:PORT]/REPOSITORY:TAG (a host has a dot or a port, or is localhost) to fork from before the snapshot's memory has arrived.")
    var tag: String

    func run() async throws {
        let start = Date()
        let engine = await global.makeEngine()
        var tag = tag
        if RegistryReference.namesRegistry(tag) {
            // A registry reference: pull all but the memory (verified), then fork at once; each
            // child's pages come from the registry as it touches them.
            let reference = try RegistryReference(parsing: tag)
            let access = RegistryAccess(insecure: registry.insecure, credentials: try registry.credentials())
            let progress = ProgressReporter(quiet: json)
            let report = try await engine.packs.pull(reference, access: access, lazyMemory: true) { step, done, total in
                progress.update(step, done: done, total: total)
            }
            progress.finish()
            tag = report.tag
        }
        try engine.forks.serveLazyMemory(tag: tag, prefetch: !noPrefetch)
        let outcomes = try await engine.forks.fork(tag: tag, count: n, memoryOrder: memoryPlacement.order, lifetime: lifetime.lifetime, network: network, limits: limits.request)
        let total = Date().timeIntervalSince(start) * 1000
        let views = outcomes.map { outcome in
            ForkView(
                id: outcome.record?.id, snapshotTag: tag, agentEndpoint: outcome.record?.agentEndpoint, pid: outcome.record?.pid,
                createdAt: outcome.record?.createdAt, generation: outcome.record?.generation, milliseconds: outcome.milliseconds,
                memory: outcome.memoryMethod?.rawValue, error: outcome.error)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            encoder.dateEncodingStrategy = .iso8601
            for view in views { print(String(decoding: try encoder.encode(view), as: UTF8.self)) }
        } else {
            for view in views {
                if let id = view.id {
                    print("\(id)  \(view.agentEndpoint ?? "")  \(String(format: "%.0f ms", view.milliseconds))  memory: \(view.memory ?? "?")")
                } else {
                    writeStandardError("clade: a child failed: \(view.error ?? "unknown error")\n")
                }
            }
            writeStandardError(String(format: "forked %d/%d children from %@ in %.0f ms\n", views.filter { $0.id != nil }.count, n, tag, total))
        }
        if outcomes.contains(where: { $0.record == nil }) { throw ExitCode(1) }
    }
}

struct RemoveSnapshot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rmi", abstract: "Remove a snapshot.")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Remove it even though sandboxes or snapshots depend on it (running forks keep working).") var force = false
    @Flag(help: "Also kill its sandboxes and remove every snapshot derived from it.") var cascade = false
    @Argument(help: "Snapshot tag.") var tag: String

    func run() async throws {
        let engine = await global.makeEngine()
        let before = (try? await engine.snapshots.list()) ?? []
        let removed = try await engine.snapshots.remove(tag, force: force, cascade: cascade)
        for tag in removed { print(tag) }
        let blobs = before.filter { removed.contains($0.tag) }.flatMap { [$0.kernel, $0.initrd, $0.rootfs] }
        reportReclaimable(engine, of: Set(blobs))
    }
}

extension BranchMode: ExpressibleByArgument {}

struct Branch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "branch", abstract: "Snapshot a running fork into a new tag (parent: its origin) and keep it running.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Tag of the new snapshot.") var tag: String
    @Option(help: "diff: only the pages the fork wrote; full: all of guest RAM; live: copy RAM while the fork runs, pausing it only briefly; auto: live where the backend can, else diff.") var mode = BranchMode.diff
    @Flag(help: "Print the report as JSON.") var json = false
    @Argument(help: "Sandbox id.") var id: String

    func run() async throws {
        let progress = ProgressReporter(quiet: json || !isInteractive)
        let (_, report) = try await global.makeEngine().branches.branch(id: id, tag: tag, mode: mode) { progress.update($0) }
        progress.finish()
        if json { return try printJSON(report) }
        print(String(format: "%@: %@ branch, paused %.0f ms, %d pages (%lld bytes), %.0f ms total",
                     report.tag as NSString, report.mode.rawValue as NSString, report.pauseMilliseconds, report.pagesCaptured, report.bytesWritten, report.totalMilliseconds))
    }
}

struct Compact: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "compact", abstract: "Flatten a snapshot's disk chain into a standalone snapshot.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Tag of the standalone snapshot.") var to: String
    @Argument(help: "Snapshot tag.") var tag: String

    func run() async throws {
        print(try await global.makeEngine().snapshots.compact(tag, to: to).tag)
    }
}
