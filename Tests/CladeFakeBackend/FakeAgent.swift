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
            var line: [UInt8] = []
            var byte: UInt8 = 0
            while read(connection, &byte, 1) == 1, byte != 0x0A { line.append(byte) }
            let response: AgentResponse
            if let request = try? AgentCodec.decode(AgentRequest.self, from: line) {
                response = guest.answer(request)
            } else {
                var failure = AgentResponse()
                failure.error = "malformed request"
                response = failure
            }
            if let encoded = try? AgentCodec.encodeLine(response) {
                _ = encoded.withUnsafeBytes { write(connection, $0.baseAddress, $0.count) }
            }
            close(connection)
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
            case .writeFile:
                state.files[request.path ?? ""] = request.content ?? ""
                response.size = request.content?.utf8.count
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
            }
            return response
        }
    }
}

public struct FakeError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension FakeGuest {
    public func restore(_ saved: State) { lockedSet(saved) }
}
