#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Version of the host↔agent protocol. Bumped only for incompatible changes.
public let agentProtocolVersion = 1

/// The actions the guest agent understands.
public enum AgentAction: String, Codable, Sendable, CaseIterable {
    /// Run a program and collect its output.
    case exec
    /// Return the contents of a file, base64-encoded.
    case readFile = "read_file"
    /// Atomically replace a file with base64-encoded content.
    case writeFile = "write_file"
    /// Liveness and identity: agent version, uptime, boot id.
    case ping
    /// Sent right after a restore: reseed the RNG, set the clock, hostname, MAC and generation id.
    case identity
}

/// One request, sent as a single JSON line.
///
/// The field names follow forkd's guest-agent protocol where it has them
/// (`action`, `args`, `timeout`), so clients written for forkd work unchanged.
public struct AgentRequest: Codable, Sendable, Equatable {
    /// Echoed back in the response, so a multiplexed channel can match replies.
    public var id: String?
    public var action: String
    /// `exec`: the argv; `args[0]` is looked up on `PATH`.
    public var args: [String]?
    /// `exec`: extra environment variables, merged over the agent's defaults.
    public var env: [String: String]?
    /// `exec`: working directory.
    public var cwd: String?
    /// `exec`: who to run as: `name`, `uid`, `name:group` or `uid:gid`, resolved through the
    /// guest's `/etc/passwd` and `/etc/group`; HOME, USER and LOGNAME follow. Default: root.
    public var user: String?
    /// `exec`: text fed to the program's standard input.
    public var stdin: String?
    /// `exec`: binary standard input, base64-encoded (wins over `stdin`).
    public var stdinBase64: String?
    /// `exec`: seconds before the whole process group is killed.
    public var timeout: Double?
    /// `read_file` / `write_file`: absolute path in the guest.
    public var path: String?
    /// `write_file`: base64-encoded content.
    public var content: String?
    /// `write_file`: permission bits, default 0o644.
    public var mode: Int?
    /// `identity`: the guest's new hostname.
    public var hostname: String?
    /// `identity`: fresh host entropy, base64, mixed into and credited to the guest's RNG.
    public var entropy: String?
    /// `identity`: the host's wall clock, nanoseconds since the epoch.
    public var timeNanoseconds: Int64?
    /// `identity`: the new generation id.
    public var generation: String?
    /// `identity`: the MAC address to give eth0.
    public var mac: String?

    enum CodingKeys: String, CodingKey {
        case id, action, args, env, cwd, user, stdin, timeout, path, content, mode, hostname, entropy, generation, mac
        case stdinBase64 = "stdin_b64"
        case timeNanoseconds = "time_ns"
    }

    public init(
        id: String? = nil, action: AgentAction, args: [String]? = nil, env: [String: String]? = nil,
        cwd: String? = nil, user: String? = nil, stdin: String? = nil, stdinBase64: String? = nil, timeout: Double? = nil,
        path: String? = nil, content: String? = nil, mode: Int? = nil, hostname: String? = nil, entropy: String? = nil,
        timeNanoseconds: Int64? = nil, generation: String? = nil, mac: String? = nil
    ) {
        self.hostname = hostname
        self.entropy = entropy
        self.timeNanoseconds = timeNanoseconds
        self.generation = generation
        self.mac = mac
        self.id = id
        self.action = action.rawValue
        self.args = args
        self.env = env
        self.cwd = cwd
        self.user = user
        self.stdin = stdin
        self.stdinBase64 = stdinBase64
        self.timeout = timeout
        self.path = path
        self.content = content
        self.mode = mode
    }
}

/// One response, sent as a single JSON line. Fields that do not apply are omitted.
public struct AgentResponse: Codable, Sendable, Equatable {
    public var id: String?
    /// Set when the request failed before or instead of producing a result.
    public var error: String?
    public var stdout: String?
    public var stderr: String?
    public var exitCode: Int32?
    /// `exec`: the command outlived its timeout and its process group was killed.
    public var timedOut: Bool?
    /// `exec`: output beyond the agent's cap was dropped.
    public var truncated: Bool?
    /// `ping`: always true, for forkd compatibility.
    public var pong: Bool?
    public var version: String?
    public var protocolVersion: Int?
    public var uptimeSeconds: Double?
    public var bootID: String?
    public var hostname: String?
    /// `read_file`: base64-encoded content.
    public var content: String?
    public var size: Int?
    public var mode: Int?
    /// `ping` / `identity`: the generation id set by the last `identity`, if any.
    public var generation: String?
    /// `identity`: steps that could not be applied (the others were).
    public var warnings: [String]?

    enum CodingKeys: String, CodingKey {
        case id, error, stdout, stderr, pong, version, hostname, content, size, mode, truncated, generation, warnings
        case exitCode = "exit_code"
        case timedOut = "timed_out"
        case protocolVersion = "protocol_version"
        case uptimeSeconds = "uptime"
        case bootID = "boot_id"
    }

    public init(id: String? = nil, error: String? = nil) {
        self.id = id
        self.error = error
    }
}

/// Encodes and decodes the JSON-lines framing shared by the host and the agent.
public enum AgentCodec {
    /// Largest line either side accepts; longer input is a protocol error.
    public static let maxLineBytes = 96 * 1024 * 1024

    public static func encodeLine<T: Encodable>(_ value: T) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var bytes = [UInt8](try encoder.encode(value))
        bytes.append(0x0A)
        return bytes
    }

    public static func decode<T: Decodable>(_ type: T.Type, from line: some Collection<UInt8>) throws -> T {
        try JSONDecoder().decode(type, from: Data(line))
    }
}
