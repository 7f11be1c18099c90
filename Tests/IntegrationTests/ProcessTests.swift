import CladeGuest
import CladeGuestProtocol
import CladeStore
import Foundation
import Testing

/// Collects what a stream delivered, for assertions after it ends.
final class StreamLog: @unchecked Sendable {
    private let lock = NSLock()
    private var stdoutBytes = Data()
    private var stderrBytes = Data()
    private var lines: [(Date, String)] = []
    private var pending = ""
    private var attachedSeen = false

    func add(_ event: ProcessEvent) {
        lock.withLock {
            switch event {
            case .stdout(let data):
                stdoutBytes.append(data)
                pending += String(decoding: data, as: UTF8.self)
                while let newline = pending.firstIndex(of: "\n") {
                    lines.append((Date(), String(pending[..<newline])))
                    pending = String(pending[pending.index(after: newline)...])
                }
            case .stderr(let data): stderrBytes.append(data)
            case .attached: attachedSeen = true
            default: break
            }
        }
    }

    var stdout: String { lock.withLock { String(decoding: stdoutBytes, as: UTF8.self) } }
    var stderr: String { lock.withLock { String(decoding: stderrBytes, as: UTF8.self) } }
    var timedLines: [(Date, String)] { lock.withLock { lines } }
    var isAttached: Bool { lock.withLock { attachedSeen } }
}

/// Waits until `condition` holds, polling; fails the test after `seconds` (a bound for slow
/// machines, not an expectation of speed).
func waitUntil(_ what: String, seconds: Double = 60, _ condition: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while !(try await condition()) {
        guard Date() < deadline else { throw HarnessError("gave up after \(Int(seconds)) s waiting for \(what)") }
        try await Task.sleep(nanoseconds: 50_000_000)
    }
}

/// The process model with real VMs: streamed output, stdin, signals, terminals, concurrency,
/// flow control, processes that live on in forks, and files.
@Suite(.serialized) struct ProcessIntegrationTests {
    static let cli = CLIHarness(home: CLIHarness.privateHome("processes"))

    /// The agent of a sandbox, from `clade ls --json`.
    static func agent(_ id: String) throws -> AgentClient {
        let listed = try cli.run(["ls", "--json"])
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]])
        let endpoint = try #require(rows.first { $0["id"] as? String == id }?["agent_endpoint"] as? String)
        let port = try #require(endpoint.split(separator: ":").last.flatMap { Int($0) })
        return AgentClient(port: port)
    }

    static func boot() throws -> String {
        let booted = try cli.run(["boot", "--json"])
        try #require(booted.status == 0, "boot: \(booted.stderr)")
        let record = try #require(try JSONSerialization.jsonObject(with: Data(booted.stdout.utf8)) as? [String: Any])
        return try #require(record["id"] as? String)
    }

    static func forks(of tag: String, count: Int) throws -> [String] {
        let fork = try cli.run(["fork", tag, "-n", "\(count)", "--json"])
        try #require(fork.status == 0, "fork: \(fork.stderr)")
        return fork.stdout.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["id"] as? String
        }
    }

    @Test func outputStreamsAsProducedAndStdinSignalsAndTerminalsWork() async throws {
        let id = try Self.boot()
        defer { _ = try? Self.cli.run(["kill", id]) }
        let agent = try Self.agent(id)

        // A line every 200 ms arrives line by line, spread over the run, not at the end.
        let ticks = StreamLog()
        let started = Date()
        let ticked = try await agent.run(ProcessSpec(args: ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do echo tick $i; sleep 0.2; done"])) { ticks.add($0) }
        let ended = Date()
        #expect(ticked.code == 0)
        let lines = ticks.timedLines
        #expect(lines.map(\.1) == (1...10).map { "tick \($0)" })
        if let first = lines.first, let last = lines.last {
            #expect(last.0.timeIntervalSince(first.0) >= 1.2, "ten lines 200 ms apart arrived within \(last.0.timeIntervalSince(first.0)) s")
            #expect(ended.timeIntervalSince(first.0) >= 1.2, "the first line came only \(ended.timeIntervalSince(first.0)) s before the end")
            print("streamed lines: first after \(first.0.timeIntervalSince(started)) s, last after \(last.0.timeIntervalSince(started)) s")
        }

        // stdin echoed through cat, on the stream's own connection.
        let echoed = StreamLog()
        let cat = try await agent.run(ProcessSpec(args: ["cat"]), session: { session, pid in
            var write = AgentRequest(action: .stdin)
            write.pid = pid
            write.data = Data("hello through cat\n".utf8).base64EncodedString()
            try await session.send(write)
            var close = AgentRequest(action: .closeStdin)
            close.pid = pid
            try await session.send(close)
        }) { echoed.add($0) }
        #expect(cat.code == 0 && echoed.stdout == "hello through cat\n")

        // SIGTERM reaches a trap; SIGKILL ends a process that ignores TERM.
        let trapper = try await agent.startDetached(ProcessSpec(
            args: ["sh", "-c", "trap 'echo got TERM; exit 7' TERM; touch /tmp/trapper-ready; while :; do sleep 0.1; done"], tag: "trapper"))
        let trapLog = StreamLog()
        async let trapExit = agent.attach(tag: "trapper") { trapLog.add($0) }
        // Signal only once the trap is set and the stream is attached.
        try await waitUntil("the trap and the attach") {
            guard trapLog.isAttached else { return false }
            return (try? await agent.stat("/tmp/trapper-ready")) != nil
        }
        try await agent.signal(pid: trapper, "TERM")
        let trapped = try await trapExit
        #expect(trapped.code == 7 && trapLog.stdout.contains("got TERM"), "TERM: \(trapped) \(trapLog.stdout)")
        let stubborn = try await agent.startDetached(ProcessSpec(
            args: ["sh", "-c", "trap '' TERM; touch /tmp/stubborn-ready; while :; do sleep 0.1; done"], tag: "stubborn"))
        let stubbornLog = StreamLog()
        async let killedExit = agent.attach(pid: stubborn) { stubbornLog.add($0) }
        try await waitUntil("the ignored TERM and the attach") {
            guard stubbornLog.isAttached else { return false }
            return (try? await agent.stat("/tmp/stubborn-ready")) != nil
        }
        try await agent.signal(tag: "stubborn", "TERM")
        try await Task.sleep(nanoseconds: 500_000_000)
        #expect(try await agent.processes().first { $0.pid == stubborn }?.running == true, "the process ignoring TERM should still run")
        try await agent.signal(tag: "stubborn", "KILL")
        let killed = try await killedExit
        #expect(killed.code == 137 && killed.signal == 9)

        // A PTY reports its size, and a resize is seen by the next `stty size`.
        let terminal = StreamLog()
        let tty = try await agent.run(
            ProcessSpec(args: ["sh", "-c", "stty size; read line; stty size"], terminal: TerminalSize(rows: 30, cols: 100)),
            session: { session, pid in
                while !terminal.stdout.contains("30 100") { try await Task.sleep(nanoseconds: 50_000_000) }
                var resize = AgentRequest(action: .resize)
                resize.pid = pid
                resize.pty = TerminalSize(rows: 40, cols: 120)
                try await session.send(resize)
                try await Task.sleep(nanoseconds: 200_000_000)
                var write = AgentRequest(action: .stdin)
                write.pid = pid
                write.data = Data("\n".utf8).base64EncodedString()
                try await session.send(write)
            }) { terminal.add($0) }
        #expect(tty.code == 0)
        #expect(terminal.stdout.contains("30 100") && terminal.stdout.contains("40 120"), "terminal said: \(terminal.stdout.debugDescription)")

        // A timeout kills the process group and says so.
        let timed = try await agent.run(ProcessSpec(args: ["sleep", "30"], timeout: 1)) { _ in }
        #expect(timed.timedOut && timed.code == 124)

        // The CLI streams too, and keeps exit codes.
        let cliRun = try Self.cli.run(["exec", id, "--", "sh", "-c", "echo out; echo err >&2; exit 3"])
        #expect(cliRun.status == 3 && cliRun.stdout == "out\n" && cliRun.stderr == "err\n")
        let ps = try Self.cli.run(["ps", id])
        #expect(ps.stdout.contains("trapper") && ps.stdout.contains("exited 7"), "\(ps.stdout)")
    }

    @Test func taggedProcessesLiveOnInForksWithTheirOwnState() async throws {
        let id = try Self.boot()
        let agent = try Self.agent(id)
        // A counter that reads lines: its count lives in the process's memory.
        _ = try await agent.startDetached(ProcessSpec(
            args: ["sh", "-c", "n=0; while read line; do n=$((n+1)); echo \"$line $n\"; done"], tag: "counter"))
        let before = StreamLog()
        async let seen = agent.attach(tag: "counter") { before.add($0) }
        try await waitUntil("the attach") { before.isAttached }
        try await agent.writeStdin(tag: "counter", Data("base\n".utf8))
        try await waitUntil("the counter's first line") { before.stdout.contains("base 1") }
        let snapshot = try Self.cli.run(["snapshot", id, "--tag", "procs"])
        try #require(snapshot.status == 0, "snapshot: \(snapshot.stderr)")
        _ = try? await seen
        defer { _ = try? Self.cli.run(["rmi", "--cascade", "procs"]) }

        let children = try Self.forks(of: "procs", count: 4)
        try #require(children.count == 4)
        for (index, child) in children.enumerated() {
            let childAgent = try Self.agent(child)
            let table = try await childAgent.processes()
            #expect(table.contains { $0.tag == "counter" && $0.running }, "fork \(child) lost the tagged process: \(table)")
            let log = StreamLog()
            let attached = Task { try await childAgent.attach(tag: "counter") { log.add($0) } }
            try await waitUntil("the attach in fork \(child)") { log.isAttached }
            // Each fork feeds its own copy a different number of lines: counts diverge from the shared 1.
            for _ in 0...index { try await childAgent.writeStdin(tag: "counter", Data("fork\(index)\n".utf8)) }
            let expected = "fork\(index) \(index + 2)"
            let deadline = Date().addingTimeInterval(20)
            while !log.stdout.contains(expected) && Date() < deadline { try await Task.sleep(nanoseconds: 50_000_000) }
            #expect(log.stdout.contains(expected), "fork \(child) printed \(log.stdout.debugDescription)")
            try await childAgent.closeStdin(tag: "counter")
            let exit = try await attached.value
            #expect(exit.code == 0)
        }
        #expect(try Self.cli.run(["kill"] + children).status == 0)
    }

    @Test func concurrentStreamsStayApartAndAFloodDoesNotStarvePings() async throws {
        let id = try Self.boot()
        let baked = try Self.cli.run(["snapshot", id, "--tag", "streams"])
        try #require(baked.status == 0, "snapshot: \(baked.stderr)")
        defer { _ = try? Self.cli.run(["rmi", "--cascade", "streams"]) }
        let children = try Self.forks(of: "streams", count: 5)
        try #require(children.count == 5)
        defer { _ = try? Self.cli.run(["kill"] + children) }

        // 20 streams, 4 per sandbox, at once; each must get exactly its own lines, in order.
        let agents = try children.map { try Self.agent($0) }
        try await withThrowingTaskGroup(of: (String, String, String).self) { group in
            for (box, agent) in agents.enumerated() {
                for stream in 0..<4 {
                    let name = "s\(box)-\(stream)"
                    group.addTask {
                        let log = StreamLog()
                        let script = "i=0; while [ $i -lt 200 ]; do i=$((i+1)); echo \(name)-$i; done"
                        let exit = try await agent.run(ProcessSpec(args: ["sh", "-c", script])) { log.add($0) }
                        #expect(exit.code == 0)
                        return (name, log.stdout, (1...200).map { "\(name)-\($0)\n" }.joined())
                    }
                }
            }
            var count = 0
            for try await (name, got, expected) in group {
                count += 1
                #expect(got == expected, "stream \(name) got other output (\(got.count) bytes, expected \(expected.count))")
            }
            #expect(count == 20)
        }

        // 200 MiB on stdout while pings every 100 ms keep being answered.
        let agent = agents[0]
        let total = 200 * 1024 * 1024
        let received = Counter()
        let flood = Task {
            try await agent.run(ProcessSpec(args: ["head", "-c", "\(total)", "/dev/zero"])) { event in
                if case .stdout(let data) = event { received.add(data.count) }
            }
        }
        var latencies: [Double] = []
        while !flood.isCancelled {
            let start = Date()
            let pong = try await agent.send(AgentRequest(action: .ping), timeout: 10)
            #expect(pong.pong == true)
            latencies.append(Date().timeIntervalSince(start))
            if received.value >= total { break }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        let exit = try await flood.value
        #expect(exit.code == 0 && received.value == total, "flood delivered \(received.value) of \(total) bytes")
        let sorted = latencies.sorted()
        print("pings during a 200 MiB flood: \(sorted.count), median \(sorted[sorted.count / 2]) s, max \(sorted.last ?? 0) s")
        #expect(sorted.count >= 20, "only \(sorted.count) pings were answered during the flood")
        #expect((sorted.last ?? 99) < 5, "a ping waited \(sorted.last ?? 99) s behind the flood")
    }

    @Test func filesMoveByChunksAndWatchesSeeChanges() async throws {
        let id = try Self.boot()
        defer { _ = try? Self.cli.run(["kill", id]) }
        let agent = try Self.agent(id)

        // 100 MiB up and back down in chunks; same SHA-256 both ways.
        let size = 100 * 1024 * 1024
        var generator = SystemRandomNumberGenerator()
        let source = FileManager.default.temporaryDirectory.appendingPathComponent("clade-big-\(getpid())")
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("clade-big-copy-\(getpid())")
        defer {
            try? FileManager.default.removeItem(at: source)
            try? FileManager.default.removeItem(at: copy)
        }
        var bytes = [UInt8](repeating: 0, count: size)
        for index in stride(from: 0, to: size, by: 8) {
            withUnsafeBytes(of: generator.next() as UInt64) { word in
                for offset in 0..<8 { bytes[index + offset] = word[offset] }
            }
        }
        try Data(bytes).write(to: source)
        let expected = Digest.of(bytes).hex
        bytes = []
        let put = try Self.cli.run(["files", "put", id, source.path, "/root/big.bin"], timeout: 600)
        #expect(put.status == 0, "put: \(put.stderr)")
        let inGuest = try await agent.run(ProcessSpec(args: ["sha256sum", "/root/big.bin"])) { _ in }
        #expect(inGuest.code == 0)
        let get = try Self.cli.run(["files", "get", id, "/root/big.bin", copy.path], timeout: 600)
        #expect(get.status == 0, "get: \(get.stderr)")
        let roundTrip = Digest.of(try Data(contentsOf: copy)).hex
        #expect(roundTrip == expected)

        // Directory operations.
        try await agent.makeDirectory("/root/tree/a/b")
        try await agent.move("/root/big.bin", to: "/root/tree/a/big.bin")
        let listed = try await agent.list("/root/tree", depth: 3).map(\.path)
        #expect(listed == ["/root/tree/a", "/root/tree/a/b", "/root/tree/a/big.bin"], "\(listed)")
        #expect(try await agent.stat("/root/tree/a/big.bin").size == Int64(size))
        try await agent.remove("/root/tree")
        do {
            _ = try await agent.stat("/root/tree")
            Issue.record("/root/tree is still there after remove")
        } catch GuestError.guestRequest(_, let kind) {
            #expect(kind == "not_found")
        }

        // A watch sees create, write and remove.
        try await agent.makeDirectory("/root/watched")
        let operations = WatchLog()
        let watcher = Task {
            try await agent.watch("/root/watched", recursive: true) { line in
                if line.event == .watching { operations.ready() }
                if line.event == .fs, let operation = line.operation, let path = line.path { operations.add("\(operation) \(path)") }
                return operations.count < 3
            }
        }
        while !operations.isReady { try await Task.sleep(nanoseconds: 50_000_000) }
        _ = try await agent.run(ProcessSpec(args: ["sh", "-c", "echo one > /root/watched/f; sleep 0.3; echo two >> /root/watched/f; sleep 0.3; rm /root/watched/f"])) { _ in }
        let deadline = Date().addingTimeInterval(20)
        while operations.count < 3 && Date() < deadline { try await Task.sleep(nanoseconds: 50_000_000) }
        watcher.cancel()
        let seen = operations.all
        #expect(seen.first == "create /root/watched/f" && seen.contains("write /root/watched/f") && seen.last == "remove /root/watched/f", "\(seen)")
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var total = 0
    func add(_ count: Int) { lock.withLock { total += count } }
    var value: Int { lock.withLock { total } }
}

final class WatchLog: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [String] = []
    private var watching = false
    func add(_ entry: String) { lock.withLock { if entries.last != entry { entries.append(entry) } } }
    func ready() { lock.withLock { watching = true } }
    var isReady: Bool { lock.withLock { watching } }
    var count: Int { lock.withLock { entries.count } }
    var all: [String] { lock.withLock { entries } }
}
