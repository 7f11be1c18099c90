import CladeGuest
import CladeGuestProtocol
import Foundation
import Testing

/// The real guest agent (the very binary clade puts into every initrd), run on the host as an
/// ordinary process with `--port`: races in its process table and its uploads, shown without
/// the cost of a VM. Nothing here needs the agent to be PID 1.
final class HostAgent: @unchecked Sendable {
    let process = Process()
    let port: Int
    let client: AgentClient

    init(environment: [String: String] = [:]) async throws {
        let binary = CLIHarness.packageRoot.appendingPathComponent(".build/release/clade-agent")
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw HarnessError("\(binary.path) is missing: run scripts/build.sh before the integration tests")
        }
        port = Int.random(in: 10000...11999)
        process.executableURL = binary
        process.arguments = ["--port", "\(port)"]
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        client = AgentClient(port: port, sandbox: "host-agent")
        let running = process
        _ = try await client.waitUntilReady(timeout: 30) {
            if !running.isRunning { throw HarnessError("clade-agent exited at start (status \(running.terminationStatus))") }
        }
    }

    /// SIGKILL: the agent, made to be PID 1, does not end on SIGTERM.
    func stop() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

/// Collects what a stream delivers, for checks after it ends.
final class AttachLog: @unchecked Sendable {
    private let lock = NSLock()
    private var attachedAt: UInt64?
    private var lines: [String] = []
    private var buffered = ""

    func attached() { lock.withLock { attachedAt = Self.wallNanoseconds() } }

    func add(_ data: Data) {
        lock.withLock {
            buffered += String(decoding: data, as: UTF8.self)
            while let end = buffered.firstIndex(of: "\n") {
                lines.append(String(buffered[..<end]))
                buffered = String(buffered[buffered.index(after: end)...])
            }
        }
    }

    var snapshot: (attachedAt: UInt64?, lines: [String]) { lock.withLock { (attachedAt, lines) } }

    static func wallNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}

@Suite(.serialized) struct AgentOnHostTests {
    /// Two `start`s with one tag at once: exactly one runs, the other is refused (the check and
    /// the claim of the tag are one step).
    @Test func concurrentStartsWithOneTagNeverBothRun() async throws {
        let agent = try await HostAgent()
        defer { agent.stop() }
        for round in 0..<5 {
            let tag = "only-one-\(round)"
            let outcomes = await withTaskGroup(of: Bool.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        (try? await agent.client.startDetached(ProcessSpec(args: ["sleep", "30"], tag: tag))) != nil
                    }
                }
                return await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            let running = try await agent.client.processes().filter { $0.tag == tag && $0.running }
            #expect(outcomes.filter { $0 }.count == 1, "round \(round): \(outcomes.filter { $0 }.count) of 8 starts with tag \(tag) succeeded")
            #expect(running.count == 1, "round \(round): \(running.count) processes run with tag \(tag)")
            try await agent.client.signal(tag: tag, "KILL")
        }
    }

    /// Output made right after `attached` reaches the attached stream. The agent is told to
    /// pause 400 ms inside `attach`, after announcing it: if the announcement and the
    /// subscription were two steps, everything the process printed meanwhile would be lost.
    @Test func attachLosesNoOutputMadeAfterItsAnnouncement() async throws {
        let agent = try await HostAgent(environment: ["CLADE_AGENT_TEST_ATTACH_PAUSE_MS": "400"])
        defer { agent.stop() }
        // Each line carries the wall clock in nanoseconds when it was printed.
        let ticker = "while :; do date +%s%N; sleep 0.02; done"
        _ = try await agent.client.startDetached(ProcessSpec(args: ["sh", "-c", ticker], tag: "ticker"))
        let log = AttachLog()
        _ = try? await agent.client.attach(tag: "ticker", session: { _, _ in
            try await Task.sleep(nanoseconds: 1_500_000_000)
            try await agent.client.signal(tag: "ticker", "KILL")
        }) { event in
            switch event {
            case .attached: log.attached()
            case .stdout(let data): log.add(data)
            default: break
            }
        }
        let (attachedAt, lines) = log.snapshot
        let announced = try #require(attachedAt, "no attached event")
        let stamps = lines.compactMap { UInt64($0) }
        #expect(!stamps.isEmpty, "the attached stream saw no output")
        // The ticker prints every ~20 ms; the first line printed after the announcement must be
        // among those delivered, so some delivered line is stamped within 150 ms of it.
        let early = stamps.filter { $0 + 50_000_000 >= announced && $0 < announced + 150_000_000 }
        let firstOffset = stamps.first.map { (Int64($0) - Int64(announced)) / 1_000_000 }
        #expect(!early.isEmpty, "no delivered line was printed within 150 ms after attached; the first delivered line was printed \(firstOffset.map(String.init) ?? "?") ms after it")
    }

    /// A v2 timeout holds for a process that closed both its output streams and keeps running.
    @Test func aTimeoutHoldsAfterTheProcessClosesItsStreams() async throws {
        let agent = try await HostAgent()
        defer { agent.stop() }
        let begun = Date()
        let exit = try await agent.client.run(
            ProcessSpec(args: ["sh", "-c", "exec </dev/null >/dev/null 2>&1; sleep 30"], timeout: 1)) { _ in }
        let seconds = Date().timeIntervalSince(begun)
        #expect(exit.timedOut && exit.code == 124, "exit \(exit)")
        #expect(seconds < 10, "the 1 s timeout ended the process only after \(Int(seconds)) s")
    }

    /// An upload whose client goes away before the last chunk leaves no staging file.
    @Test func aClientThatDiesMidUploadLeavesNothingBehind() async throws {
        let agent = try await HostAgent()
        defer { agent.stop() }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("clade-upload-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let target = directory.appendingPathComponent("half.bin").path
        try await agent.client.withSession { session in
            var chunk = AgentRequest(action: .writeChunk, path: target, mode: 0o644)
            chunk.upload = "abandoned-1"
            chunk.offset = 0
            chunk.data = Data(repeating: 7, count: 4096).base64EncodedString()
            _ = try await session.call(chunk)
            let staged = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            #expect(staged == ["half.bin.clade-upload-abandoned-1"], "the first chunk is staged beside the target: \(staged)")
        }
        // The connection is closed; the agent hears it and removes the staging file.
        try await waitUntil("the abandoned upload's staging file to go", seconds: 10) {
            ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? ["?"]).isEmpty
        }
        // A finished upload is untouched by the cleanup of its connection.
        let size = try await agent.client.upload(to: target) { [once = OnceFlag()] in once.take() ? Data("whole".utf8) : nil }
        #expect(size == 5)
        // A negative check: give the agent the moment it needs to act on that connection's close.
        try await Task.sleep(nanoseconds: 200_000_000)
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "whole")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["half.bin"])
    }
}

/// True the first time only.
final class OnceFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var taken = false
    func take() -> Bool { lock.withLock { defer { taken = true }; return !taken } }
}
