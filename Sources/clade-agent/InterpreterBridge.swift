#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CladeGuestProtocol

/// `eval`: hands code to a resident interpreter listening on `/.clade/run/<tag>.sock` and returns
/// its answer. The interpreter is an ordinary process the host started (tagged, so it survives in
/// snapshots); each fork talks to its own copy, whose state is private after the fork.
enum InterpreterBridge {
    static func socketPath(tag: String) -> String { "/.clade/run/\(tag).sock" }

    static func evaluate(_ request: AgentRequest) throws -> AgentResponse {
        guard let code = request.code else { throw CommandError(description: "eval needs 'code'") }
        let tag = request.tag ?? "interpreter"
        guard !tag.contains("/"), !tag.isEmpty else { throw CommandError(description: "'\(tag)' is not an interpreter tag") }
        let path = socketPath(tag: tag)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw FileOperations.failure("open a socket for", path) }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw CommandError(description: "tag '\(tag)' is too long") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in pathBytes.enumerated() { raw[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            throw CommandError(
                description: "no resident interpreter tagged '\(tag)' answers in this guest (\(String(cString: strerror(errno)))); bake the snapshot with --interpreter")
        }
        let seconds = Int(request.timeout ?? 3600)
        var limit = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var line = AgentRequest(action: .eval)
        line.code = code
        guard let bytes = try? AgentCodec.encodeLine(line), writeAll(fd, bytes) else {
            throw CommandError(description: "cannot send the code to the interpreter tagged '\(tag)'")
        }
        var reader = LineReader(fd: fd)
        guard let reply = reader.nextLine() else {
            throw CommandError(description: "the interpreter tagged '\(tag)' closed the connection without an answer (it may have crashed or timed out)")
        }
        do {
            return try AgentCodec.decode(AgentResponse.self, from: reply)
        } catch {
            throw CommandError(description: "the interpreter tagged '\(tag)' answered something that is not a result: \(error)")
        }
    }
}
