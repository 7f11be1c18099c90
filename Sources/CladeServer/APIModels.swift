import CladeEngine
import CladeModel
import Foundation

/// A sandbox as `GET /v1/sandboxes` returns it: forkd's fields, then clade's.
public struct SandboxInfo: Codable, Sendable, Equatable {
    public var id: String
    public var snapshotTag: String?
    /// host:port of the sandbox's guest agent.
    public var guestAddr: String
    public var pid: Int32?
    public var createdAtUnix: Int64
    public var state: String
    public var image: String
    public var generation: String?
    public var memoryMiB: Int
    public var vcpus: Int
    /// When the sandbox ends (absent: it lives until killed), and what happens then.
    public var expiresAtUnix: Int64?
    public var onTimeout: String?
    /// What the sandbox may reach (`none`, `outbound`, `allow:...`).
    public var network: String?
    /// The host-side limits its VM runs under, when clade could apply them.
    public var limits: SandboxLimits?

    enum CodingKeys: String, CodingKey {
        case id, pid, state, image, generation, vcpus, network, limits
        case snapshotTag = "snapshot_tag"
        case guestAddr = "guest_addr"
        case createdAtUnix = "created_at_unix"
        case memoryMiB = "memory_mib"
        case expiresAtUnix = "expires_at_unix"
        case onTimeout = "on_timeout"
    }

    init(_ record: SandboxRecord) {
        id = record.id
        snapshotTag = record.snapshot
        guestAddr = record.agentEndpoint
        pid = record.pid
        createdAtUnix = Int64(record.createdAt.timeIntervalSince1970)
        state = record.state.rawValue
        image = record.image
        generation = record.generation
        memoryMiB = record.memoryMiB
        vcpus = record.cpus
        expiresAtUnix = record.expiresAt.map { Int64($0.timeIntervalSince1970) }
        onTimeout = record.onTimeout?.rawValue
        network = record.network?.description
        limits = record.limits
    }
}

/// A snapshot as `GET /v1/snapshots` returns it: forkd's fields, then clade's.
public struct SnapshotSummary: Codable, Sendable, Equatable {
    public var tag: String
    public var dir: String
    public var createdAtUnix: Int64
    public var branchedFrom: String?
    public var id: String
    public var parent: String?
    public var image: String?
    public var memoryMiB: Int
    public var vcpus: Int
    /// On a branch's answer: which mode it used and what it cost.
    public var branch: BranchReport?

    enum CodingKeys: String, CodingKey {
        case tag, dir, id, parent, image, vcpus, branch
        case createdAtUnix = "created_at_unix"
        case branchedFrom = "branched_from"
        case memoryMiB = "memory_mib"
    }

    init(_ metadata: SnapshotMetadata, directory: URL, branch: BranchReport? = nil) {
        self.branch = branch
        tag = metadata.tag
        dir = directory.path
        createdAtUnix = Int64(metadata.createdAt.timeIntervalSince1970)
        branchedFrom = metadata.branchedFrom
        id = metadata.id
        parent = metadata.parent?.tag
        image = metadata.image
        memoryMiB = metadata.machine.memoryMiB
        vcpus = metadata.machine.vcpus
    }
}

/// Parses a request's `network` field; a malformed policy is the client's error.
func networkPolicy(_ text: String?) throws -> NetworkPolicy? {
    guard let text else { return nil }
    do { return try NetworkPolicy(parsing: text) } catch { throw APIError(.badRequest, "field 'network': \(error)") }
}

struct SpawnRequest: Decodable {
    var snapshotTag: String
    var n: Int?
    /// Seconds each child lives; absent: until killed.
    var timeoutSecs: Double?
    var onTimeout: TimeoutAction?
    /// `none`, `outbound` or `allow:CIDR[:PORT],...`; absent: the snapshot's policy.
    var network: String?
    /// `cpu_cores`, `memory_mib` (host memory), `processes`; absent fields take the defaults.
    var limits: LimitRequest?
    enum CodingKeys: String, CodingKey {
        case n, network, limits
        case snapshotTag = "snapshot_tag"
        case timeoutSecs = "timeout_secs"
        case onTimeout = "on_timeout"
    }
}

/// `POST /v1/sandboxes/:id/timeout`: a new end time, seconds from now; null removes it.
struct TimeoutRequest: Decodable {
    var timeoutSecs: Double?
    var onTimeout: TimeoutAction?
    enum CodingKeys: String, CodingKey {
        case timeoutSecs = "timeout_secs"
        case onTimeout = "on_timeout"
    }
}

struct ExecRequest: Decodable {
    var args: [String]
    var timeoutSecs: Double?
    var env: [String: String]?
    var cwd: String?
    var user: String?
    var stdin: String?
    enum CodingKeys: String, CodingKey {
        case args, env, cwd, user, stdin
        case timeoutSecs = "timeout_secs"
    }
}

struct ExecResult: Codable {
    var stdout: String
    var stderr: String
    var exitCode: Int32
    var timedOut: Bool
    enum CodingKeys: String, CodingKey {
        case stdout, stderr
        case exitCode = "exit_code"
        case timedOut = "timed_out"
    }
}

struct BranchRequest: Decodable {
    var tag: String?
    var mode: String?
}

struct BakeRequest: Decodable {
    var tag: String
    var image: String?
    var warm: String?
    var memoryMiB: Int?
    var vcpus: Int?
    /// The policy the snapshot records for its forks, as in ``SpawnRequest/network``.
    var network: String?
    enum CodingKeys: String, CodingKey {
        case tag, image, warm, vcpus, network
        case memoryMiB = "memory_mib"
    }
}

struct FileWriteRequest: Decodable {
    var path: String
    /// Base64.
    var content: String
    var mode: Int?
}

struct JobRequest: Decodable {
    /// `pack`, `push` or `pull`.
    var kind: String
    var tag: String?
    /// pack: layout directory or `.tar` path on the daemon's host.
    var output: String?
    /// push/pull: registry reference.
    var reference: String?
    var insecure: Bool?
    var username: String?
    var password: String?
    var ancestors: Bool?
    var force: Bool?
}

/// `POST /v1/sandboxes/:id/ports`.
struct PortRequest: Decodable {
    var guestPort: Int
    enum CodingKeys: String, CodingKey { case guestPort = "guest_port" }
}
