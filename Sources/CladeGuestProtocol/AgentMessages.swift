#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Version of the host↔agent protocol. Version 2 added processes (streamed events, stdin,
/// signals, terminals, a process table), file operations, directory watches and `eval`; every
/// version-1 request is answered exactly as before, so version-1 clients do not notice.
public let agentProtocolVersion = 2

/// Abilities an agent announces in `ping`, so a host never relies on one that an older agent
/// (inside an older snapshot) would silently ignore.
public enum AgentFeature {
    /// `start` honours `root`: the process runs chrooted in that directory.
    public static let chrootedStart = "start-root"
    /// `start` honours `rlimits`: the process starts with those resource limits.
    public static let resourceLimits = "start-rlimits"
    /// Everything this agent can do.
    public static let all = [chrootedStart, resourceLimits]
}

/// A POSIX resource limit, as the OCI runtime spec names one (`RLIMIT_NOFILE`).
public struct ResourceLimit: Codable, Sendable, Equatable {
    public var type: String
    public var soft: UInt64
    public var hard: UInt64

    public init(type: String, soft: UInt64, hard: UInt64) {
        self.type = type
        self.soft = soft
        self.hard = hard
    }
}

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
    /// Sent right after a restore: reseed the RNG, set the clock, hostname, MAC and generation id,
    /// then let processes held by `freeze` run.
    case identity
    /// v2: start a process and stream its events on this connection (`started`, `stdout`,
    /// `stderr`, `exit`); with `detach`, answer `started` only.
    case start
    /// v2: stream a running process's further output and its exit, by `pid` or `tag`.
    case attach
    /// v2: write `data` (base64) to a process's standard input.
    case stdin
    /// v2: close a process's standard input (end of file for it).
    case closeStdin = "close_stdin"
    /// v2: send `signal` to a process's group.
    case signal
    /// v2: set a process's terminal size (`pty`).
    case resize
    /// v2: the process table.
    case processes
    /// v2: one path's metadata.
    case stat
    /// v2: a directory's entries, to `depth` levels.
    case listDir = "list_dir"
    /// v2: make a directory (and its parents with `parents`).
    case mkdir
    /// v2: rename `path` to `destination`.
    case move
    /// v2: remove a file, or a directory with everything in it.
    case remove
    /// v2: write one chunk of an upload at `offset`; `commit` moves the whole into place.
    case writeChunk = "write_chunk"
    /// v2: stream filesystem events under `path` on this connection.
    case watch
    /// v2: evaluate `code` in the resident interpreter tagged `tag` (default `interpreter`).
    case eval
    /// v2: hold every user process still (cgroup freezer) before the host captures the guest;
    /// answers `held`. `identity` or `thaw` lets them run again.
    case freeze
    /// v2: let processes held by `freeze` run again.
    case thaw
    /// v2: set user metadata (`metadata`, key to value) on the file at `path`, kept as extended
    /// attributes (`user.e2b.<key>`, as envd keeps them); keys are lowercased.
    case setMetadata = "set_metadata"
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
    /// `start`: a shell command line, run with `sh -c` (instead of `args`).
    public var command: String?
    /// `start`: a name to find the process by later (`attach`, `stdin`, `signal`); unique among running processes.
    public var tag: String?
    /// `start`: run on a pseudo-terminal of this size; `resize`: the new size.
    public var pty: TerminalSize?
    /// `start`: answer `started` and leave the process running on its own.
    public var detach: Bool?
    /// `start`: keep the process running when this connection closes (a tagged or detached
    /// process always does); otherwise its process group is killed, as a terminal hang-up would.
    public var background: Bool?
    /// For `start`: the directory the process sees as `/` (a container's own root inside the
    /// guest). Its user, working directory and program are looked up inside that root.
    public var root: String?
    /// For `start`: resource limits the process starts with, set before its user changes.
    public var rlimits: [ResourceLimit]?
    /// `attach`, `stdin`, `close_stdin`, `signal`, `resize`: the process, by pid (or `tag`).
    public var pid: Int32?
    /// `signal`: a name (`TERM`, `SIGKILL`) or number.
    public var signal: String?
    /// `stdin` / `write_chunk`: bytes, base64-encoded.
    public var data: String?
    /// `read_file` / `write_chunk`: where the chunk starts.
    public var offset: Int64?
    /// `read_file`: the most bytes to return (a chunked read; without it the whole file, up to the cap).
    public var length: Int?
    /// `list_dir`: how many levels to descend (1 = the directory's own entries).
    public var depth: Int?
    /// `mkdir`: make missing parents too; `watch`: include subdirectories.
    public var recursive: Bool?
    /// `move`: the new path.
    public var destination: String?
    /// `write_chunk`: after writing, move the upload into place at `path`.
    public var commit: Bool?
    /// `write_chunk`: names the upload, so that concurrent uploads to one path do not mix.
    public var upload: String?
    /// `eval`: the code.
    public var code: String?
    /// `set_metadata`: the metadata to set.
    public var metadata: [String: String]?

    enum CodingKeys: String, CodingKey {
        case id, action, args, env, cwd, user, stdin, timeout, path, content, mode, hostname, entropy, generation, mac
        case command, tag, pty, detach, background, pid, signal, data, offset, length, depth, recursive, destination, commit, upload, code, metadata
        case root, rlimits
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
    /// For `ping`: optional abilities this agent has beyond its protocol version (see
    /// ``AgentFeature``); an agent that lists none predates them.
    public var features: [String]?
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
    /// `freeze`: how many processes are held.
    public var held: Int?
    /// v2 streams: what this line reports (see ``AgentEvent``).
    public var event: AgentEvent?
    /// v2: the process the line is about.
    public var pid: Int32?
    /// v2 `stdout` / `stderr` events: the bytes, base64-encoded.
    public var data: String?
    /// v2 `exit` event: the signal that ended the process, when one did.
    public var signal: Int32?
    /// v2 `processes`: the table.
    public var processes: [GuestProcess]?
    /// v2 `stat`, `mkdir`: the entry; `fs` events: the entry affected, when it still exists.
    public var entry: FileEntry?
    /// v2 `list_dir`: the entries, parents before children.
    public var entries: [FileEntry]?
    /// v2 `fs` events: what happened (`create`, `write`, `remove`, `rename`, `chmod`) and to which path.
    public var operation: String?
    public var path: String?
    /// v2 `read_file` with `length`: whether the chunk reaches the end of the file.
    public var eof: Bool?
    /// v2 `eval`: the value of the last expression (`repr`), when there was one.
    public var result: String?
    /// v2: what kind of failure `error` is, when the agent can tell: `not_found`, `exists`,
    /// `permission_denied`.
    public var errorKind: String?

    enum CodingKeys: String, CodingKey {
        case id, error, stdout, stderr, pong, version, hostname, content, size, mode, truncated, generation, warnings, held
        case event, pid, data, signal, processes, entry, entries, path, eof, result, features
        case operation = "op"
        case errorKind = "error_kind"
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

/// What a line of a v2 stream reports.
public enum AgentEvent: String, Codable, Sendable {
    case started, attached, stdout, stderr, exit
    /// `watch`: the watch is in place; events after this line are changes.
    case watching
    /// `watch`: one filesystem change.
    case fs
}

/// A terminal size.
public struct TerminalSize: Codable, Sendable, Equatable {
    public var rows: UInt16
    public var cols: UInt16
    public init(rows: UInt16, cols: UInt16) {
        self.rows = rows
        self.cols = cols
    }
}

/// One row of the agent's process table.
public struct GuestProcess: Codable, Sendable, Equatable {
    public var pid: Int32
    public var tag: String?
    public var args: [String]
    public var cwd: String?
    public var user: String?
    public var pty: Bool
    /// Seconds since the epoch, by the guest's clock.
    public var startedAt: Double
    public var running: Bool
    public var exitCode: Int32?
    public var signal: Int32?

    enum CodingKeys: String, CodingKey {
        case pid, tag, args, cwd, user, pty, running, signal
        case startedAt = "started_at"
        case exitCode = "exit_code"
    }

    public init(pid: Int32, tag: String?, args: [String], cwd: String?, user: String?, pty: Bool, startedAt: Double, running: Bool, exitCode: Int32?, signal: Int32?) {
        self.pid = pid
        self.tag = tag
        self.args = args
        self.cwd = cwd
        self.user = user
        self.pty = pty
        self.startedAt = startedAt
        self.running = running
        self.exitCode = exitCode
        self.signal = signal
    }
}

/// One file or directory, as `stat` and `list_dir` describe it.
public struct FileEntry: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable { case file, directory, symlink, other }
    public var name: String
    public var path: String
    public var type: Kind
    public var size: Int64
    /// Permission bits (with setuid, setgid, sticky).
    public var mode: Int
    public var uid: UInt32
    public var gid: UInt32
    /// Modification time, seconds since the epoch.
    public var modifiedAt: Double
    public var symlinkTarget: String?
    /// User metadata set with `set_metadata` (nil when there is none).
    public var metadata: [String: String]?

    enum CodingKeys: String, CodingKey {
        case name, path, type, size, mode, uid, gid, metadata
        case modifiedAt = "mtime"
        case symlinkTarget = "symlink_target"
    }

    public init(name: String, path: String, type: Kind, size: Int64, mode: Int, uid: UInt32, gid: UInt32, modifiedAt: Double, symlinkTarget: String?) {
        self.name = name
        self.path = path
        self.type = type
        self.size = size
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.modifiedAt = modifiedAt
        self.symlinkTarget = symlinkTarget
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
