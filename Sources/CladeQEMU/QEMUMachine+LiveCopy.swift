#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import CladeVMM
import Foundation

/// Live branches through QEMU's precopy migration, landed by clade in a raw memory file.
///
/// Why not `background-snapshot` (userfaultfd write protection), which pauses only to arm:
/// a confined QEMU runs as its sandbox's uid (`-runas`), and with `vm.unprivileged_userfaultfd=0`
/// the kernel refuses that uid a userfaultfd ("Background-snapshot is not supported by host
/// kernel"); QEMU 7.2 does not use `/dev/userfaultfd`. Precopy needs no privilege: QEMU logs
/// dirty pages itself and stops the guest only when what is left fits its downtime limit.
extension QEMUMachine {
    static let liveDescriptorName = "clade-live"
    /// A local socket is bounded by memory bandwidth, not QEMU's default 128 MiB/s.
    static let unlimitedBandwidth = 1 << 40
    /// While the engine holds the guest's processes, the end of the first pass is slowed so
    /// the guest is not stopped before they are held.
    static let holdingBandwidth = 32 << 20
    /// The pause QEMU aims for when it decides to stop the guest.
    static let downtimeLimitMilliseconds = 15
    /// The first pass is this close to done (a fraction of RAM left) when processes get held.
    static let holdWhenLeft = 0.125

    enum LiveAttempt {
        case copied(LiveCopyReport)
        /// The guest stopped before its processes were held; the copy was cancelled and the guest runs.
        case stoppedEarly
    }

    public func copyMemoryLive(_ plan: LiveCopyPlan) async throws -> LiveCopyReport {
        let hold = HoldState(plan.beforeSwitchover)
        var restarts = 0
        while true {
            switch try await QMPDescriptorSession.run(socket: files.qmpSocket, { session in try self.copyOnce(plan, hold: hold, session: session) }) {
            case .copied(var report):
                report.restarts = restarts
                logger.debug("live copy done", metadata: ["restarts": "\(restarts)", "passes": "\(report.passes)", "held": "\(report.processesHeld)"])
                return report
            case .stoppedEarly:
                // Rare: the hold was still on its way when QEMU stopped the guest. The copy starts
                // over once the processes are held, so the result is never taken with them running.
                restarts += 1
                guard restarts < 3 else { throw VMMError.stateTransferFailed(backend: backendName, reason: "live copy: the guest kept stopping before its processes were held") }
                await hold.waitUntilDone()
            }
        }
    }

    private func copyOnce(_ plan: LiveCopyPlan, hold: HoldState, session: QMPDescriptorSession) throws -> LiveAttempt {
        let output = try FileSystem.open(plan.memoryFile, flags: O_RDWR | O_CLOEXEC)
        defer { close(output) }
        // A restarted copy must not keep pages of the first one.
        guard ftruncate(output, 0) == 0, ftruncate(output, off_t(plan.memoryBytes)) == 0 else {
            throw StoreError.systemCall("ftruncate", path: plan.memoryFile.path, errno: errno)
        }
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            throw StoreError.systemCall("socketpair", path: "live copy", errno: errno)
        }
        let landing = StreamLanding(reader: MigrationStreamReader(block: "ram", blockBytes: UInt64(plan.memoryBytes), output: output), descriptor: pair[0])
        defer { landing.finish() }
        var theirs: Int32 = pair[1]
        defer { if theirs >= 0 { close(theirs) } }

        try session.execute("migrate-set-capabilities", arguments: Self.liveCapabilities(true))
        defer { _ = try? session.execute("migrate-set-capabilities", arguments: Self.liveCapabilities(false)) }
        try setBandwidth(Self.unlimitedBandwidth, session)
        try session.execute("migrate-set-parameters", arguments: ["downtime-limit": .number(Double(Self.downtimeLimitMilliseconds))])
        try session.execute("getfd", arguments: ["fdname": .string(Self.liveDescriptorName)], attaching: theirs)
        close(theirs)
        theirs = -1
        try session.execute("migrate", arguments: ["uri": .string("fd:\(Self.liveDescriptorName)")])

        var passes = 1
        var slowed = false
        var stoppedSeen = Date()
        let deadline = Date().addingTimeInterval(600)
        while true {
            guard Date() < deadline else {
                _ = try? session.execute("migrate_cancel")
                throw VMMError.stateTransferFailed(backend: backendName, reason: "live copy did not converge within 600 s")
            }
            let info = try session.execute("query-migrate")
            let status = info["status"]?.stringValue ?? "none"
            passes = Int(info["ram"]?["dirty-sync-count"]?.numberValue ?? Double(passes))
            logger.trace("live copy", metadata: ["status": "\(status)", "passes": "\(passes)", "remaining": "\(info["ram"]?["remaining"]?.numberValue ?? -1)", "held": "\(hold.isDone)"])
            if status == "pre-switchover" { stoppedSeen = Date(); break }
            if let failure = landing.failure {
                _ = try? session.execute("migrate_cancel")
                try? session.waitForMigration(until: ["cancelled", "failed"], timeout: 60)
                throw failure
            }
            guard status == "active" || status == "setup" else {
                throw VMMError.stateTransferFailed(backend: backendName, reason: "live copy \(status): \(info["error-desc"]?.stringValue ?? "no reason given")")
            }
            if !hold.hasStarted, Self.firstPassNearlyDone(info) {
                try setBandwidth(Self.holdingBandwidth, session)
                slowed = true
                hold.start()
                FaultPoint.branchLiveCopying.crashIfRequested()
            }
            if slowed, hold.isDone {
                try setBandwidth(Self.unlimitedBandwidth, session)
                slowed = false
            }
            usleep(1_000)
        }
        // The guest is stopped. With the hold still unanswered its processes may be running in this image.
        guard hold.isDone else {
            _ = try? session.execute("migrate_cancel")
            try session.waitForMigration(until: ["cancelled", "failed"], timeout: 60)
            return .stoppedEarly
        }
        let transfer = files.directory.appendingPathComponent(".state-transfer.partial")
        try? FileSystem.remove(transfer)
        defer { try? FileSystem.remove(transfer) }
        do {
            // The disk first: switching it drains the block layer, which may complete requests
            // into guest memory and device queues; the device state is saved after, and RAM is
            // sent after both, so all three show the same instant.
            try prepareWritable(plan.diskOverlay)
            try session.execute("blockdev-snapshot-sync", arguments: Self.freezeDiskArguments(onto: plan.diskOverlay))
            try prepareWritable(transfer)
            try session.execute("xen-save-devices-state", arguments: Self.devicesOnlyStateArguments(to: transfer))
            FaultPoint.branchLivePaused.crashIfRequested()
            try session.execute("migrate-continue", arguments: ["state": .string("pre-switchover")])
            try session.waitForMigration(timeout: 60)
        } catch {
            // Cancelling (or a failed completion) makes QEMU run the guest again on its old disk
            // unless the overlay was already taken; `cont` below covers a guest left stopped.
            _ = try? session.execute("migrate_cancel")
            _ = try? session.execute("cont")
            throw error
        }
        try session.execute("cont")
        let totals = try landing.result()
        try FileSystem.moveReplacing(transfer, to: plan.deviceState)
        let stopped = session.eventTimes["STOP"]
        let resumed = session.eventTimes["RESUME"]
        // QEMU's own clock when it sent both events; else from when clade saw the stop, which is later.
        let pause = (stopped.flatMap { stop in resumed.map { ($0 - stop) * 1000 } }) ?? Date().timeIntervalSince(stoppedSeen) * 1000
        return .copied(LiveCopyReport(pauseMilliseconds: pause, pagesWritten: totals.pagesWritten, passes: passes, processesHeld: hold.held, restarts: 0))
    }

    static func liveCapabilities(_ on: Bool) -> [String: JSONValue] {
        let names = ["pause-before-switchover", "auto-converge"]
        var list = names.map { JSONValue.object(["capability": .string($0), "state": .bool(on)]) }
        // Shared RAM is not skipped: a fork's RAM is private, and the stream's block list has no addresses.
        list.append(.object(["capability": .string("x-ignore-shared"), "state": .bool(false)]))
        return ["capabilities": .array(list)]
    }

    static func firstPassNearlyDone(_ info: JSONValue) -> Bool {
        guard let ram = info["ram"], let total = ram["total"]?.numberValue, total > 0 else { return false }
        if (ram["dirty-sync-count"]?.numberValue ?? 1) >= 2 { return true }
        return (ram["remaining"]?.numberValue ?? total) <= total * holdWhenLeft
    }

    private func setBandwidth(_ bytesPerSecond: Int, _ session: QMPDescriptorSession) throws {
        try session.execute("migrate-set-parameters", arguments: ["max-bandwidth": .number(Double(bytesPerSecond))])
    }
}

/// The stream reader on a thread of its own, reading the socket QEMU migrates into.
private final class StreamLanding: @unchecked Sendable {
    private let finished = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var outcome: Result<MigrationStreamReader.Totals, Error>?

    private let descriptor: Int32

    init(reader: MigrationStreamReader, descriptor: Int32) {
        self.descriptor = descriptor
        Thread.detachNewThread { [self] in
            let result = Result { try reader.land(from: DescriptorByteSource(descriptor: descriptor)) }
            lock.withLock { outcome = result }
            finished.signal()
        }
    }

    /// Waits for the reader; once it has returned, later calls return at once.
    func wait() {
        guard lock.withLock({ outcome == nil }) else { return }
        finished.wait()
        finished.signal()
    }

    /// The reader's error, once it stopped reading before the end of the stream.
    var failure: Error? {
        lock.withLock {
            if case .failure(let error) = outcome { return error }
            return nil
        }
    }

    /// Ends the reader (at once when QEMU still holds the other end) and closes the socket.
    func finish() {
        shutdown(descriptor, Int32(SHUT_RDWR))
        wait()
        close(descriptor)
    }

    func result() throws -> MigrationStreamReader.Totals {
        wait()
        guard let outcome = lock.withLock({ outcome }) else { throw VMMError.stateTransferFailed(backend: "qemu", reason: "live copy: the stream reader did not finish") }
        return try outcome.get()
    }
}

/// The engine's hold of the guest's processes, run once across restarts of the copy.
private final class HoldState: @unchecked Sendable {
    private let body: @Sendable () async -> Bool
    private let lock = NSLock()
    private var task: Task<Bool, Never>?
    private var outcome: Bool?

    init(_ body: @escaping @Sendable () async -> Bool) { self.body = body }

    var hasStarted: Bool { lock.withLock { task != nil } }
    var isDone: Bool { lock.withLock { outcome != nil } }
    var held: Bool { lock.withLock { outcome ?? false } }

    func start() {
        lock.withLock {
            guard task == nil else { return }
            task = Task { [self] in
                let held = await body()
                lock.withLock { outcome = held }
                return held
            }
        }
    }

    func waitUntilDone() async {
        start()
        _ = await lock.withLock({ task })?.value
    }
}
