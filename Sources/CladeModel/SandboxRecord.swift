import CladeStore
import Foundation

/// Lifecycle states of a sandbox. See the README's state machine.
public enum SandboxState: String, Codable, Sendable {
    case booting
    case running
    case paused
    case standby
    /// Its hypervisor process is gone without clade stopping it.
    case dead
}

/// A guest TCP port reachable on the host's loopback.
public struct PublishedPort: Codable, Sendable, Equatable {
    public var guestPort: Int
    public var hostPort: Int

    public init(guestPort: Int, hostPort: Int) {
        self.guestPort = guestPort
        self.hostPort = hostPort
    }

    /// `127.0.0.1:PORT`, where the guest port answers on the host.
    public var hostAddress: String { "127.0.0.1:\(hostPort)" }

    enum CodingKeys: String, CodingKey {
        case guestPort = "guest_port"
        case hostPort = "host_port"
    }
}

/// What happens to a sandbox at its end time.
public enum TimeoutAction: String, Codable, Sendable, CaseIterable {
    /// Stop it and remove everything it had.
    case kill
    /// Put it on standby (no process; `clade resume` brings it back).
    case standby
    /// Put it on standby keeping only its disk: `clade resume` boots it again from that disk.
    case standbyDiskOnly = "standby_disk_only"
}

/// A VM clade started, persisted as `sandboxes/<id>/sandbox.json`.
///
/// Paths are derived from the home and id, never stored, so a store can move.
public struct SandboxRecord: Codable, Sendable, Equatable {
    public var id: String
    public var image: String
    public var state: SandboxState
    public var pid: Int32?
    /// Host TCP port forwarded to the agent's port 8888 in the guest.
    public var agentPort: Int
    public var mac: String
    public var memoryMiB: Int
    public var cpus: Int
    public var accelerator: String
    public var createdAt: Date
    /// The snapshot this sandbox was forked from, if any.
    public var snapshot: String?
    /// The id of that snapshot (tags can be reused after `rmi`; ids cannot).
    public var snapshotID: String?
    /// Changes every time the guest is restored from a snapshot (fork, resume).
    public var generation: String?
    /// What the VM booted from, so a snapshot of it can name them by digest.
    public var kernel: Digest?
    public var initrd: Digest?
    public var rootfs: Digest?
    public var kernelCommandLine: String?
    /// The qcow2 file in the sandbox directory the guest writes to (changes when a branch freezes the disk).
    public var activeDisk: String?
    /// Read-only disk layers hardlinked into the sandbox directory as `layer-0.qcow2` … (a fork's chain).
    public var layerCount: Int?
    /// The image's user, environment and working directory, applied to every exec.
    public var imageConfig: ImageConfig?
    /// When the sandbox's lifetime ends (nil: it lives until killed), and what happens then.
    /// Enforced by the daemon and by the next clade command after it passes.
    public var expiresAt: Date?
    public var onTimeout: TimeoutAction?
    /// Guest ports published on the host (`clade port`); re-applied when the sandbox resumes.
    public var publishedPorts: [PublishedPort]?
    /// What the guest may reach (nil: recorded before policies existed, treated as ``NetworkPolicy/standard``).
    public var network: NetworkPolicy?
    /// How its hypervisor process is confined: the uid it runs as, its seccomp filter, its limits.
    public var confinement: SandboxConfinement?
    /// What the VMM may take of the host (nil: recorded before limits existed, or not enforced).
    public var limits: SandboxLimits?
    /// Why a `dead` sandbox died, when clade knows (e.g. its memory limit).
    public var deathCause: String?
    /// On standby with only its disk kept (no memory, no device state): resuming boots it.
    public var standbyDiskOnly: Bool?

    public init(
        id: String, image: String, state: SandboxState, pid: Int32?, agentPort: Int, mac: String,
        memoryMiB: Int, cpus: Int, accelerator: String, createdAt: Date = Date(), snapshot: String? = nil, generation: String? = nil
    ) {
        self.snapshot = snapshot
        self.generation = generation
        self.id = id
        self.image = image
        self.state = state
        self.pid = pid
        self.agentPort = agentPort
        self.mac = mac
        self.memoryMiB = memoryMiB
        self.cpus = cpus
        self.accelerator = accelerator
        self.createdAt = createdAt
    }

    enum CodingKeys: String, CodingKey {
        case id, image, state, pid, mac, cpus, accelerator, snapshot, generation, kernel, initrd, rootfs
        case kernelCommandLine = "kernel_command_line"
        case activeDisk = "active_disk"
        case snapshotID = "snapshot_id"
        case layerCount = "layer_count"
        case imageConfig = "image_config"
        case expiresAt = "expires_at"
        case onTimeout = "on_timeout"
        case publishedPorts = "published_ports"
        case network, confinement, limits
        case deathCause = "death_cause"
        case standbyDiskOnly = "standby_disk_only"
        case agentPort = "agent_port"
        case memoryMiB = "memory_mib"
        case createdAt = "created_at"
    }

    /// `127.0.0.1:PORT`, where the guest agent answers.
    public var agentEndpoint: String { "127.0.0.1:\(agentPort)" }
}

/// The files of one sandbox, all inside its directory.
public struct SandboxPaths: Sendable {
    public let directory: URL

    public init(home: CladeHome, id: String) {
        directory = home.sandboxes.appendingPathComponent(id)
    }

    public var record: URL { directory.appendingPathComponent("sandbox.json") }
    /// The overlay a cold boot or a fork starts writing to.
    public var disk: URL { directory.appendingPathComponent("disk.qcow2") }
    /// Layer `index` of a disk chain; layer 0 backs onto the image's rootfs blob.
    public func layer(_ index: Int) -> URL { directory.appendingPathComponent(SandboxPaths.layerName(index)) }
    public static func layerName(_ index: Int) -> String { "layer-\(index).qcow2" }
    public var memory: URL { directory.appendingPathComponent("memory") }
    public var deviceState: URL { directory.appendingPathComponent("devices.state") }
    /// Present while an operation (branch, standby) may have the guest paused; if its clade dies,
    /// the marker tells `clade ls` which sandboxes to check.
    public var pauseMarker: URL { directory.appendingPathComponent("operation-pause") }
    /// Device state written by `standby`, loaded by `resume`.
    public var standbyState: URL { directory.appendingPathComponent("standby.state") }

}

/// All sandboxes on this host, one directory each under `sandboxes/`.
public struct SandboxCatalog: Sendable {
    public let home: CladeHome

    public init(home: CladeHome) { self.home = home }

    public func paths(_ id: String) -> SandboxPaths { SandboxPaths(home: home, id: id) }

    public func get(_ id: String) throws -> SandboxRecord? {
        try Names.validateSandboxID(id)
        return try JSONFiles.read(SandboxRecord.self, from: paths(id).record)
    }

    public func require(_ id: String) throws -> SandboxRecord {
        guard let record = try get(id) else {
            throw ModelError.notFound(kind: "sandbox", name: id, hint: "list sandboxes with `clade ls`")
        }
        return record
    }

    /// Writes the record into the sandbox's directory and the catalog.
    public func put(_ record: SandboxRecord) throws {
        try JSONFiles.write(record, to: paths(record.id).record)
        try CatalogDatabase.shared(home).write { try CatalogRows.putSandbox(record, in: $0) }
    }

    /// Adds a row for a record read from the sandbox's directory, unless the catalog already has
    /// one (whoever wrote that row wrote it after its file, so it is at least as new).
    public func indexIfMissing(_ record: SandboxRecord) throws {
        try CatalogDatabase.shared(home).write { try CatalogRows.putSandbox(record, onlyIfMissing: true, in: $0) }
    }

    /// Drops a destroyed sandbox from the catalog.
    public func forget(_ id: String) throws {
        try CatalogDatabase.shared(home).write { try CatalogRows.removeSandbox(id, in: $0) }
    }

    /// Every sandbox the catalog holds, without checking their processes (`Engine.listSandboxes` does).
    public func indexed() throws -> [SandboxRecord] {
        try CatalogDatabase.shared(home).read { try CatalogRows.sandboxes(in: $0) }
    }

    /// One sandbox's record as the catalog holds it.
    public func indexed(_ id: String) throws -> SandboxRecord? {
        try Names.validateSandboxID(id)
        return try CatalogDatabase.shared(home).read { try CatalogRows.sandbox(id, in: $0) }
    }

    /// Ids of sandboxes whose end time may have passed by `now`: one indexed catalog query, a
    /// superset (to the second) that the caller checks against each record.
    public func idsEnding(atOrBefore now: Date) throws -> [String] {
        guard try FileSystem.exists(home.sandboxes) else { return [] }
        return try CatalogDatabase.shared(home).read { try CatalogRows.sandboxIDsEnding(atOrBefore: now, in: $0) }
    }

    /// Every sandbox directory's id, including ones whose record was never written (a crash mid-boot).
    public func ids() throws -> [String] {
        guard try FileSystem.exists(home.sandboxes) else { return [] }
        return try FileManager.default.contentsOfDirectory(atPath: home.sandboxes.path)
            .filter { (try? Names.validateSandboxID($0)) != nil }
            .sorted()
    }
}
