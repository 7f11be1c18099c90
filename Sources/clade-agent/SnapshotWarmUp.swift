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
