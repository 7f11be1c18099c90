#if canImport(Glibc)
import Glibc
#endif
import CladeGuestProtocol
import Foundation

/// A stand-in for `clade-agent`: a loopback TCP listener on the port the engine chose, answering
/// one JSON line per connection from the fake machine's guest state.
public final class FakeAgent: @unchecked Sendable {
    private let listener: Int32
    private let guest: FakeGuest

    public init(port: Int, guest: FakeGuest) throws {
        self.guest = guest
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw FakeError("socket failed") }
        var reuse: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr = in_addr(s_addr: inet_addr("127.0.0.1"))
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard bound, listen(fd, 16) == 0 else {
            close(fd)
            throw FakeError("port \(port) is taken")
        }
        listener = fd
        let thread = Thread { [self] in serve() }
        thread.start()
    }

    public func shutdownListener() {
        Glibc.shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    private func serve() {
        while true {
            let connection = accept(listener, nil, nil)
            if connection < 0 {
                if errno == EINTR { continue }
                return
            }
            let guest = self.guest
            Thread.detachNewThread { Self.converse(on: connection, with: guest) }
        }
    }

    /// Answers requests on one connection, in order, until the host closes it (or a stream ends).
    private static func converse(on connection: Int32, with guest: FakeGuest) {
        defer { close(connection) }
        while true {
            var line: [UInt8] = []
            var byte: UInt8 = 0
            while read(connection, &byte, 1) == 1, byte != 0x0A { line.append(byte) }
            if line.isEmpty { return }
            let lines: [AgentResponse]
            var endsConnection = false
            if let request = try? AgentCodec.decode(AgentRequest.self, from: line) {
                lines = guest.answerLines(request)
                // A fake stream has nothing more to say after its events: close, as a watch's host would see.
                endsConnection = request.action == AgentAction.watch.rawValue
            } else {
                var failure = AgentResponse()
                failure.error = "malformed request"
                lines = [failure]
            }
            for response in lines {
                if let encoded = try? AgentCodec.encodeLine(response) {
                    _ = encoded.withUnsafeBytes { write(connection, $0.baseAddress, $0.count) }
                }
            }
            if endsConnection { return }
        }
    }
}

/// What the fake guest remembers: its hostname and the files written into it. Saved state carries
/// it, so a fork sees what its snapshot's guest had.
public final class FakeGuest: @unchecked Sendable {
    private let lock = NSLock()
    private var state: State

    public struct State: Codable {
        public var hostname = "fake"
        public var files: [String: String] = [:]
        public var directories: Set<String> = []
        public var processes: [GuestProcess] = []

        public init() {}
    }

    public init(state: State = State()) { self.state = state }

    public var snapshot: State { lock.withLock { state } }

    public func lockedSet(_ saved: State) { lock.withLock { state = saved } }

    /// Writes a file into the guest, as a command in it would.
    public func write(_ path: String, _ content: String) { lock.withLock { state.files[path] = content } }

    public func answer(_ request: AgentRequest) -> AgentResponse {
        lock.withLock {
            var response = AgentResponse()
            switch AgentAction(rawValue: request.action) {
            case .ping:
                response.pong = true
                response.hostname = state.hostname
            case .identity:
                state.hostname = request.hostname ?? state.hostname
                response.generation = request.generation
            case .freeze: response.held = state.processes.count
            case .thaw: break
            case .writeFile:
                state.files[request.path ?? ""] = request.content ?? ""
                response.size = request.content?.utf8.count
            case .readFile where request.length != nil:
                response = answerVersion2(request, &state)
            case .readFile:
                if let content = state.files[request.path ?? ""] { response.content = content } else { response.error = "no such file" }
            case .exec:
                let args = request.args ?? []
                switch args.first {
                case "hostname": response.stdout = state.hostname + "\n"
                case "cat": response.stdout = args.dropFirst().map { state.files[$0] ?? "" }.joined()
                default: response.stdout = args.joined(separator: " ") + "\n"
                }
                response.exitCode = 0
            case .none:
                response.error = "unknown action \(request.action)"
            default:
                response = answerVersion2(request, &state)
            }
            return response
        }
    }

    /// Every line the agent would send for `request`: one reply, or a stream's events.
    public func answerLines(_ request: AgentRequest) -> [AgentResponse] {
        func line(_ event: AgentEvent, pid: Int32? = nil, data: String? = nil) -> AgentResponse {
            var response = AgentResponse(id: request.id)
            response.event = event
            response.pid = pid
            response.data = data
            return response
        }
        switch AgentAction(rawValue: request.action) {
        case .start:
            let pid = lock.withLock { () -> Int32 in
                let pid = Int32(100 + state.processes.count)
                state.processes.append(GuestProcess(
                    pid: pid, tag: request.tag, args: request.args ?? [], cwd: request.cwd, user: request.user, pty: request.pty != nil,
                    startedAt: 0, running: request.detach == true, exitCode: request.detach == true ? nil : 0, signal: nil))
                return pid
            }
            if request.detach == true { return [line(.started, pid: pid)] }
            var exit = line(.exit, pid: pid)
            exit.exitCode = 0
            let output = Data(((request.args ?? []).joined(separator: " ") + "\n").utf8).base64EncodedString()
            return [line(.started, pid: pid), line(.stdout, pid: pid, data: output), exit]
        case .attach:
            var exit = line(.exit, pid: request.pid)
            exit.exitCode = 0
            return [line(.attached, pid: request.pid), exit]
        case .watch:
            var watching = line(.watching)
            watching.path = request.path
            var change = line(.fs)
            change.operation = "create"
            change.path = (request.path ?? "") + "/new"
            return [watching, change]
        default:
            var response = answer(request)
            response.id = request.id
            return [response]
        }
    }

    private func entry(_ path: String, isDirectory: Bool, size: Int = 0) -> FileEntry {
        FileEntry(
            name: String(path.split(separator: "/").last ?? ""), path: path, type: isDirectory ? .directory : .file, size: Int64(size),
            mode: isDirectory ? 0o755 : 0o644, uid: 0, gid: 0, modifiedAt: 0, symlinkTarget: nil)
    }

    /// Files and processes, on the fake guest's flat file table (contents kept base64, as sent).
    private func answerVersion2(_ request: AgentRequest, _ state: inout State) -> AgentResponse {
        var response = AgentResponse()
        let path = request.path ?? ""
        func isDirectory(_ path: String) -> Bool {
            state.directories.contains(path) || state.files.keys.contains { $0.hasPrefix(path + "/") }
        }
        func missing() -> AgentResponse {
            var failure = AgentResponse(error: "cannot stat \(path): No such file or directory")
            failure.errorKind = "not_found"
            return failure
        }
        switch AgentAction(rawValue: request.action) {
        case .processes:
            response.processes = state.processes
        case .stdin, .closeStdin, .signal, .resize:
            guard state.processes.contains(where: { $0.pid == request.pid || ($0.tag != nil && $0.tag == request.tag) }) else {
                var failure = AgentResponse(error: "no such process")
                failure.errorKind = "not_found"
                return failure
            }
            response.pid = request.pid
        case .stat:
            if let content = state.files[path] {
                response.entry = entry(path, isDirectory: false, size: Data(base64Encoded: content)?.count ?? 0)
            } else if isDirectory(path) {
                response.entry = entry(path, isDirectory: true)
            } else {
                return missing()
            }
        case .listDir:
            guard isDirectory(path) else { return missing() }
            response.entries = state.files.keys.filter { $0.hasPrefix(path + "/") }.sorted().map {
                entry($0, isDirectory: false, size: Data(base64Encoded: state.files[$0] ?? "")?.count ?? 0)
            }
        case .mkdir:
            state.directories.insert(path)
            response.entry = entry(path, isDirectory: true)
        case .move:
            guard let content = state.files.removeValue(forKey: path), let destination = request.destination else { return missing() }
            state.files[destination] = content
            response.entry = entry(destination, isDirectory: false)
        case .remove:
            guard state.files.removeValue(forKey: path) != nil || state.directories.remove(path) != nil else { return missing() }
        case .readFile:
            guard let content = state.files[path], let bytes = Data(base64Encoded: content) else { return missing() }
            let start = min(bytes.count, Int(request.offset ?? 0))
            let chunk = bytes[start..<min(bytes.count, start + (request.length ?? bytes.count))]
            response.content = Data(chunk).base64EncodedString()
            response.size = chunk.count
            response.eof = start + chunk.count >= bytes.count
        case .writeChunk:
            let previous = (request.offset ?? 0) == 0 ? Data() : Data(base64Encoded: state.files[path] ?? "") ?? Data()
            state.files[path] = (previous + (Data(base64Encoded: request.data ?? "") ?? Data())).base64EncodedString()
            response.size = Data(base64Encoded: request.data ?? "")?.count
        case .eval:
            response.result = request.code
            response.exitCode = 0
            response.stdout = ""
            response.stderr = ""
        default:
            response.error = "unknown action \(request.action)"
        }
        return response
    }
}

public struct FakeError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension FakeGuest {
    public func restore(_ saved: State) { lockedSet(saved) }
}
