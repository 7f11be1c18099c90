#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CladeGuestProtocol

/// Runs, before a snapshot, the agent code a restored guest's first requests need, with
/// sample values and no effect on the guest.
///
/// Under emulation a restored guest pays for every piece of code it runs for the first time:
/// QEMU translates it again in each fork. Work that happens once per agent process (the Swift
/// runtime building generic metadata and witness tables, the dynamic linker binding a symbol,
/// the guest kernel mapping a page of the agent's code) is otherwise first done after the
/// restore, in every child, because a freshly booted agent has never decoded an identity or
/// encoded a process event. Done here, it is in the snapshot, and children run only the
/// requests' own code.
enum SnapshotWarmUp {
    /// Whether this agent has run ``runCommand(handler:)``: once per boot is enough, as a
    /// running guest keeps its page cache, and a restored agent inherits the flag.
    private static let commandRan = Guarded(false)

    /// Runs `/bin/sh -c :` through the same path as a streamed `clade exec`, before the first
    /// snapshot of a boot (call it before the user processes are frozen). The shell's pages then
    /// come from the snapshot's page cache rather than the disk in each fork's first command,
    /// and the agent's launch and stream code has met its types once. An image without
    /// `/bin/sh` skips it.
    static func runCommand(handler: RequestHandler) {
        guard commandRan.withLock({ ran in defer { ran = true }; return !ran }), access("/bin/sh", X_OK) == 0 else { return }
        var ends: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0 else { return }
        let connection = Connection(fd: ends[0])
        defer {
            connection.close()
            close(ends[1])
        }
        let start = AgentRequest(id: "warm-up", action: .start, args: ["/bin/sh", "-c", ":"], timeout: 10)
        guard let line = try? AgentCodec.encodeLine(start), handler.handle(line: Array(line.dropLast()), on: connection) == nil else { return }
        // Until the stream's exit line, or 10 s: the answer itself is of no interest.
        var seen: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = monotonicSeconds() + 10
        while monotonicSeconds() < deadline, !String(decoding: seen, as: UTF8.self).contains("\"exit\"") {
            var ready = pollfd(fd: ends[1], events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, 1000) >= 0 else { return }
            if ready.revents == 0 { continue }
            let count = read(ends[1], &buffer, buffer.count)
            guard count > 0 else { return }
            seen += buffer[0..<count]
        }
        // The first line is `started`, with the pid the table lists the command under.
        if let end = seen.firstIndex(of: 0x0A), let started = try? AgentCodec.decode(AgentResponse.self, from: seen[..<end]), let pid = started.pid {
            handler.processes.table.forgetOnceEnded(pid: pid, within: 5)
        }
    }

    /// Decodes and encodes what a restored guest's first requests carry, with sample values.
    static func run(handler: RequestHandler) {
        let identity = AgentRequest(
            id: "warm-up", action: .identity, hostname: "000000000000", entropy: Data(repeating: 0x5A, count: 64).base64EncodedString(),
            timeNanoseconds: 0, generation: "00000000-0000-0000-0000-000000000000", mac: "52:54:00:00:00:00")
        if let line = try? AgentCodec.encodeLine(identity), let decoded = try? AgentCodec.decode(AgentRequest.self, from: line.dropLast()) {
            _ = decoded.entropy.flatMap { Data(base64Encoded: $0) }.map { [UInt8]($0) }
            _ = decoded.mac.flatMap(macOctets)
            _ = HostsFile.claiming(decoded.hostname ?? "", in: readSmallFile(HostsFile.path))
        }
        // A ping runs the request path end to end: decoding, dispatch, the answer's fields.
        if let ping = try? AgentCodec.encodeLine(AgentRequest(id: "warm-up", action: .ping)),
           var answer = handler.handle(line: Array(ping.dropLast()), on: Connection(fd: -1, ownsDescriptor: false)) {
            answer.warnings = ["warm-up"]
            _ = encodeResponse(answer)
        }
        // What a command's stream sends: its start, its output and its end.
        let start = AgentRequest(id: "start", action: .start, args: ["true"], env: ["PATH": "/usr/bin"], cwd: "/")
        if let line = try? AgentCodec.encodeLine(start) { _ = try? AgentCodec.decode(AgentRequest.self, from: line.dropLast()) }
        for event in [AgentEvent.started, .stdout, .exit] {
            var line = AgentResponse(id: "start")
            line.event = event
            line.pid = 2
            if event == .stdout { line.data = Data("warm-up\n".utf8).base64EncodedString() }
            if event == .exit { line.exitCode = 0 }
            _ = encodeResponse(line)
        }
    }
}
