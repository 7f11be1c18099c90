#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxShims
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CladeGuestProtocol

let agentVersion = CladeVersion.current

/// Identity the host assigned at the last restore.
enum GuestIdentity {
    static let generation = Guarded<String?>(nil)
}

/// Turns one decoded request into one response. Never throws: every failure becomes
/// a response with `error` set, so a client always gets an answer.
struct RequestHandler: Sendable {
    static let maxFileBytes = 64 * 1024 * 1024
    let reaper: ChildReaper
    let processes: ProcessService

    init(reaper: ChildReaper, table: ProcessTable) {
        self.reaper = reaper
        processes = ProcessService(reaper: reaper, table: table)
    }

    /// The reply to send, or nil when the action streams its own lines on `connection`.
    func handle(line: [UInt8], on connection: Connection) -> AgentResponse? {
        let request: AgentRequest
        do {
            request = try AgentCodec.decode(AgentRequest.self, from: line)
        } catch {
            return AgentResponse(error: "malformed request: \(error)")
        }
        guard let action = AgentAction(rawValue: request.action) else {
            let known = AgentAction.allCases.map(\.rawValue).joined(separator: ", ")
            return AgentResponse(id: request.id, error: "unknown action '\(request.action)'; known: \(known)")
        }
        if action != .ping && action != .identity { IdentityFollowUp.waitUntilDone() }
        var response: AgentResponse
        do {
            switch action {
            case .exec: response = try exec(request)
            case .readFile:
                if let length = request.length {
                    response = try FileOperations.readChunk(try requirePath(request), offset: request.offset ?? 0, length: length)
                } else {
                    response = try readFile(request)
                }
            case .writeFile: response = try writeFile(request)
            case .ping: response = ping()
            case .identity:
                // The answer goes out first and the follow-up runs on this thread after it
                // (see IdentityFollowUp), so the reply is sent here rather than by the caller.
                var answer = identity(request)
                answer.id = request.id
                IdentityFollowUp.run(rewriteHosts: request.hostname != nil) { connection.send(answer) }
                return nil
            case .start:
                guard let detached = try processes.start(request, on: connection) else { return nil }
                response = detached
            case .attach:
                guard let ended = try processes.attach(request, on: connection) else { return nil }
                response = ended
            case .stdin, .closeStdin, .signal, .resize: response = try processes.control(action, request)
            case .processes: response = processes.list()
            case .stat:
                response = AgentResponse()
                response.entry = try FileOperations.entry(at: try requirePath(request))
            case .listDir:
                response = AgentResponse()
                response.entries = try FileOperations.list(try requirePath(request), depth: request.depth ?? 1)
            case .mkdir:
                response = AgentResponse()
                response.entry = try FileOperations.makeDirectory(try requirePath(request), parents: request.recursive == true, exactMode: request.mode)
            case .move:
                response = AgentResponse()
                response.entry = try FileOperations.move(try requirePath(request), to: request.destination ?? "")
            case .remove:
                try FileOperations.remove(try requirePath(request))
                response = AgentResponse()
            case .writeChunk: response = try FileOperations.writeChunk(request, on: connection)
            case .watch:
                try DirectoryWatcher.start(request, on: connection)
                return nil
            case .eval: response = try InterpreterBridge.evaluate(request)
            case .freeze:
                response = AgentResponse()
                SnapshotWarmUp.runCommand(handler: self)
                response.held = try UserFreezer.freeze()
                // Every snapshot is preceded by a freeze.
                SnapshotWarmUp.run(handler: self)
            case .thaw:
                UserFreezer.thaw()
                response = AgentResponse()
            case .setMetadata:
                let path = try requirePath(request)
                try FileMetadata.set(request.metadata ?? [:], on: path)
                response = AgentResponse()
                response.entry = try FileOperations.entry(at: path)
            }
        } catch {
            response = AgentResponse(error: "\(error)")
            response.errorKind = (error as? CommandError)?.kind
        }
        response.id = request.id
        return response
    }

    private func exec(_ request: AgentRequest) throws -> AgentResponse {
        var stdin: [UInt8] = []
        if let encoded = request.stdinBase64 {
            guard let data = Data(base64Encoded: encoded) else { throw CommandError(description: "stdin_b64 is not valid base64") }
            stdin = [UInt8](data)
        } else if let text = request.stdin {
            stdin = Array(text.utf8)
        }
        if let timeout = request.timeout, !(timeout > 0) {
            throw CommandError(description: "timeout must be a positive number of seconds")
        }
        let result = try CommandRunner(reaper: reaper).run(
            argv: request.args ?? [], environment: request.env ?? [:], cwd: request.cwd, user: request.user,
            stdin: stdin, timeout: request.timeout)
        var response = AgentResponse()
        response.stdout = String(decoding: result.stdout, as: UTF8.self)
        response.stderr = String(decoding: result.stderr, as: UTF8.self)
        response.exitCode = result.exitCode
        if result.timedOut {
            response.timedOut = true
            response.error = "command timed out after \(request.timeout ?? 0) s; its process group was killed"
        }
        if result.truncated { response.truncated = true }
        return response
    }

    private func readFile(_ request: AgentRequest) throws -> AgentResponse {
        let path = try requirePath(request)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CommandError(description: "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw CommandError(description: "cannot stat \(path): \(String(cString: strerror(errno)))") }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw CommandError(description: "\(path) is not a regular file") }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count < 0 {
                if errno == EINTR { continue }
                throw CommandError(description: "cannot read \(path): \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            bytes.append(contentsOf: buffer[0..<count])
            if bytes.count > Self.maxFileBytes {
                throw CommandError(description: "\(path) is larger than the \(Self.maxFileBytes) byte limit of read_file")
            }
        }
        var response = AgentResponse()
        response.content = Data(bytes).base64EncodedString()
        response.size = bytes.count
        response.mode = Int(info.st_mode & 0o7777)
        return response
    }

    private func writeFile(_ request: AgentRequest) throws -> AgentResponse {
        let path = try requirePath(request)
        guard let data = Data(base64Encoded: request.content ?? "") else {
            throw CommandError(description: "content is not valid base64")
        }
        let mode = mode_t(request.mode ?? 0o644)
        let temporary = "\(path).clade-tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw CommandError(description: "cannot create \(path): \(String(cString: strerror(errno)))") }
        var failure: String?
        let bytes = [UInt8](data)
        var offset = 0
        while offset < bytes.count {
            let count = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                failure = "cannot write \(path): \(String(cString: strerror(errno)))"
                break
            }
            offset += count
        }
        if failure == nil, fchmod(fd, mode) != 0 || fsync(fd) != 0 {
            failure = "cannot sync \(path): \(String(cString: strerror(errno)))"
        }
        close(fd)
        if failure == nil, rename(temporary, path) != 0 {
            failure = "cannot move the new file into place at \(path): \(String(cString: strerror(errno)))"
        }
        if let failure {
            unlink(temporary)
            throw CommandError(description: failure)
        }
        var response = AgentResponse()
        response.size = bytes.count
        return response
    }

    private func ping() -> AgentResponse {
        var response = AgentResponse()
        response.pong = true
        response.version = agentVersion
        response.protocolVersion = agentProtocolVersion
        response.features = AgentFeature.all
        response.uptimeSeconds = readSmallFile("/proc/uptime").split(separator: " ").first.flatMap { Double($0) }
        response.bootID = trimmed(readSmallFile("/proc/sys/kernel/random/boot_id"))
        var name = [CChar](repeating: 0, count: 256)
        if gethostname(&name, name.count) == 0 {
            response.hostname = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        response.generation = GuestIdentity.generation.withLock { $0 }
        return response
    }

    /// After a restore every sibling has the same RNG state, clock and name; this makes them distinct.
    private func identity(_ request: AgentRequest) -> AgentResponse {
        var warnings: [String] = []
        if let encoded = request.entropy {
            if let bytes = Data(base64Encoded: encoded), !bytes.isEmpty {
                let fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC)
                let added = fd >= 0 && [UInt8](bytes).withUnsafeBufferPointer { clade_add_entropy(fd, $0.baseAddress, Int32($0.count)) } == 0
                if !added { warnings.append("cannot add entropy: \(String(cString: strerror(errno)))") }
                // Once the CRNG is initialised, added entropy only reaches it at the next scheduled
                // reseed (up to a minute later), so siblings would read identical bytes until then.
                if added && clade_reseed_crng(fd) != 0 { warnings.append("cannot reseed the CRNG: \(String(cString: strerror(errno)))") }
                if fd >= 0 { close(fd) }
            } else {
                warnings.append("entropy is not valid base64")
            }
        }
        if let nanoseconds = request.timeNanoseconds {
            var now = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
            if clock_settime(CLOCK_REALTIME, &now) != 0 { warnings.append("cannot set the clock: \(String(cString: strerror(errno)))") }
        }
        if let hostname = request.hostname {
            if sethostname(hostname, hostname.utf8.count) != 0 { warnings.append("cannot set the hostname: \(String(cString: strerror(errno)))") }
        }
        if let mac = request.mac {
            if let octets = macOctets(mac) {
                if octets.withUnsafeBufferPointer({ clade_set_mac("eth0", $0.baseAddress) }) != 0 {
                    warnings.append("cannot set the MAC address: \(String(cString: strerror(errno)))")
                }
            } else {
                warnings.append("'\(mac)' is not a MAC address")
            }
        }
        if let generation = request.generation { GuestIdentity.generation.withLock { $0 = generation } }
        // Only now, with a fresh seed and name, may processes frozen for the snapshot run; they
        // wake once /etc/hosts names the new host, after this answer (see IdentityFollowUp).
        var response = ping()
        if !warnings.isEmpty { response.warnings = warnings }
        return response
    }

    private func requirePath(_ request: AgentRequest) throws -> String {
        guard let path = request.path, path.hasPrefix("/") else {
            throw CommandError(description: "\(request.action) needs an absolute 'path'")
        }
        return path
    }
}

/// The six octets of a MAC address written `aa:bb:cc:dd:ee:ff`, or nil.
func macOctets(_ mac: String) -> [UInt8]? {
    let octets = mac.split(separator: ":").compactMap { UInt8($0, radix: 16) }
    return octets.count == 6 ? octets : nil
}

func readSmallFile(_ path: String) -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return "" }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 4096)
    let count = read(fd, &buffer, buffer.count)
    return count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : ""
}

func trimmed(_ text: String) -> String {
    String(text.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
}
