#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import CladeVMM
import Foundation
import Logging

/// One QEMU process, controlled over its QMP socket.
public struct QEMUMachine: VMHandle {
    public let backendName = "qemu"
    let files: QEMURuntimeFiles
    public let pid: Int32
    let logger: Logger

    /// RAM lives in a file QEMU maps itself, so migration skips it (`x-ignore-shared`) and only
    /// device state (~70 KB) is written: a snapshot takes milliseconds.
    /// A live copy interrupted by a crash may leave `background-snapshot` set, which would turn
    /// a later save into a write-protected copy of all RAM: every save states it.
    static let ignoreSharedCapability: [String: JSONValue] = [
        "capabilities": .array([
            .object(["capability": .string("x-ignore-shared"), "state": .bool(true)]),
            .object(["capability": .string("background-snapshot"), "state": .bool(false)]),
        ])
    ]

    public var isAlive: Bool { ProcessControl.isAlive(pid, marker: files.processMarker) }

    /// Runs `body` on a QMP connection to this machine.
    public func withQMP<R: Sendable>(timeout: Double = 10, _ body: @escaping @Sendable (QMPClient) async throws -> R) async throws -> R {
        try await QMPClient.withConnection(socket: files.qmpSocket, timeout: timeout, logger: logger, body)
    }

    public func status(timeout: Double) async -> MachineStatus {
        let running: Bool? = try? await withTimeout(timeout, what: "QMP query-status") {
            try await withQMP(timeout: timeout) { client in
                try await client.execute("query-status", timeout: timeout)["running"]?.boolValue
            }
        }
        guard let running else { return .unreachable }
        return running ? .running : .paused
    }

    public func pause() async throws {
        try await withQMP { client in _ = try await client.execute("stop") }
    }

    public func resume() async throws {
        try await withQMP { client in _ = try await client.execute("cont") }
    }

    public func resumeAfterInterruption() async throws {
        try await QMPDescriptorSession.run(socket: files.qmpSocket) { session in
            // A live copy whose clade died may leave the guest stopped with a migration started;
            // QEMU finishes it while the guest is stopped, which lifts its write protection.
            try session.waitForAbandonedMigration()
            try session.execute("cont")
        }
    }

    public func saveState(to file: URL, kind: SavedStateKind) async throws {
        // QEMU writes into its own directory (all a confined QEMU can see); the finished file then
        // moves to where the caller wants it.
        let transfer = files.directory.appendingPathComponent(".state-transfer.partial")
        try? FileSystem.remove(transfer)
        defer { try? FileSystem.remove(transfer) }
        switch kind {
        case .memoryInSharedFile:
            // clade opens the file and hands QEMU the descriptor: QEMU may not spawn a writer.
            let output = try FileSystem.open(transfer, flags: O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode: 0o600)
            defer { close(output) }
            try await QMPDescriptorSession.run(socket: files.qmpSocket) { session in
                try session.execute("stop")
                try session.execute("migrate-set-capabilities", arguments: Self.ignoreSharedCapability)
                try session.execute("getfd", arguments: ["fdname": .string(Self.stateDescriptorName)], attaching: output)
                try session.execute("migrate", arguments: ["uri": .string("fd:\(Self.stateDescriptorName)")])
                try session.waitForMigration()
            }
        case .devicesOnly:
            try prepareWritable(transfer)
            try await withQMP { client in
                try await client.execute("stop")
                try await client.execute("xen-save-devices-state", arguments: Self.devicesOnlyStateArguments(to: transfer))
            }
        }
        try FileSystem.moveReplacing(transfer, to: file)
    }

    /// `xen-save-devices-state` writes device state with no RAM and no configuration section;
    /// despite its name it works for any guest.
    static func devicesOnlyStateArguments(to file: URL) -> [String: JSONValue] {
        ["filename": .string(file.path), "live": .bool(false)]
    }

    /// `blockdev-snapshot-sync` onto an existing overlay backed by the current disk.
    static func freezeDiskArguments(onto overlay: URL) -> [String: JSONValue] {
        ["device": .string("root"), "snapshot-file": .string(overlay.path), "format": .string("qcow2"), "mode": .string("existing")]
    }

    /// After an incoming migration QEMU has the guest announce its addresses five times over
    /// half a second (gratuitous ARP, unsolicited neighbour advertisements, multicast reports),
    /// for switches that must learn where a migrated VM went. A restored child is not a VM that
    /// moved: user-mode networking has no switch to tell, it takes on a new MAC address a moment
    /// later, and under emulation each round is guest network code run in every fork.
    static let noSelfAnnouncement: [String: JSONValue] = ["announce-rounds": .number(0)]

    /// The name QEMU's monitor gives the state file's descriptor clade hands it.
    static let stateDescriptorName = "clade-state"

    public func restoreState(from file: URL, kind: SavedStateKind) async throws {
        // clade opens the file, wherever it is, and QEMU reads the descriptor.
        let input = try FileSystem.open(file, flags: O_RDONLY | O_CLOEXEC)
        defer { close(input) }
        try await QMPDescriptorSession.run(socket: files.qmpSocket) { session in
            if kind == .memoryInSharedFile { try session.execute("migrate-set-capabilities", arguments: Self.ignoreSharedCapability) }
            try session.execute("migrate-set-parameters", arguments: Self.noSelfAnnouncement)
            try session.execute("getfd", arguments: ["fdname": .string(Self.stateDescriptorName)], attaching: input)
            try session.execute("migrate-incoming", arguments: ["uri": .string("fd:\(Self.stateDescriptorName)")])
            try session.waitForMigration()
            try session.execute("cont")
        }
    }

    /// Waits until QEMU's monitor answers a command, which it does only once QEMU has started
    /// (files opened, chroot entered, uid dropped); false when the process ends first or `timeout` passes.
    func waitUntilReady(timeout: Double = 60) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline, ProcessControl.isStarting(pid, marker: files.processMarker) {
            let answered = (try? await withQMP(timeout: 5) { client in try await client.execute("query-status") }) != nil
            if answered { return true }
            try? await Task.sleep(nanoseconds: 5_000_000)
        }
        return false
    }

    public func captureMemory(_ selection: PageSelection, memoryFile: URL) async throws -> CapturedMemory {
        let pages = selection == .written
            ? try DirtyPages.scan(pid: pid, memoryFile: memoryFile)
            : try DirtyPages.all(pid: pid, memoryFile: memoryFile)
        return CapturedMemory(pages: pages, contents: try pages.read(pid: pid))
    }

    public func freezeDisk(onto overlay: URL) async throws {
        try prepareWritable(overlay)
        try await withQMP { client in
            _ = try await client.execute("blockdev-snapshot-sync", arguments: Self.freezeDiskArguments(onto: overlay))
        }
    }

    /// `hostfwd_add` on the user-mode netdev (HMP only; QMP reaches it through
    /// `human-monitor-command`, which answers with QEMU's message on failure).
    public func forwardPort(host hostPort: Int, guest guestPort: Int) async throws {
        // In an unprivileged jail QEMU listens in its own network namespace, on every address of
        // it, and the network helper carries the host's port there.
        let helper = (try? FileSystem.exists(files.networkHelperSocket)) == true
        let reply = try await withQMP { client in
            try await client.execute("human-monitor-command", arguments: [
                "command-line": .string("hostfwd_add net0 tcp:\(helper ? "" : "127.0.0.1"):\(hostPort)-:\(guestPort)")
            ])
        }
        let message = reply.stringValue?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        guard message.isEmpty else {
            // QEMU says "Could not set up host forwarding rule" when the host port is taken.
            if QEMUCommandLine.isForwardingFailure(message) { throw VMMError.agentPortTaken(port: hostPort) }
            throw VMMError.controlFailed(backend: "qemu", operation: "forward host port \(hostPort) to guest port \(guestPort)", reason: message)
        }
        if helper { try await QEMUUserNetwork.forward(host: hostPort, guest: hostPort, socket: files.networkHelperSocket) }
    }

    public func stop() async {
        guard isAlive else { return }
        if (try? FileSystem.exists(files.qmpSocket)) == true {
            _ = try? await withTimeout(2, what: "QMP quit") {
                try await withQMP(timeout: 2) { client in _ = try? await client.execute("quit", timeout: 2) }
            }
            if await ProcessControl.waitForExit(pid, marker: files.processMarker, timeout: 3) { return }
            logger.warning("QEMU did not quit; killing it", metadata: ["pid": "\(pid)"])
        }
        ProcessControl.forceKill(pid, marker: files.processMarker)
        _ = await ProcessControl.waitForExit(pid, marker: files.processMarker, timeout: 5)
    }

    public func consoleTail(lines: Int) -> String {
        guard let text = try? String(contentsOf: files.console, encoding: .utf8) else { return "" }
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    /// A confined QEMU runs as its sandbox's uid and opens files after start with that uid's
    /// rights: give it the one file it is about to write (the caller takes ownership back before
    /// the file becomes part of a snapshot).
    func prepareWritable(_ file: URL) throws {
        guard geteuid() == 0, let owner = ProcessControl.owner(of: pid), owner.uid != 0 else { return }
        if !FileManager.default.fileExists(atPath: file.path) {
            guard FileManager.default.createFile(atPath: file.path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                throw VMMError.stateTransferFailed(backend: backendName, reason: "cannot create \(file.path)")
            }
        }
        guard chown(file.path, owner.uid, owner.gid) == 0 else {
            throw StoreError.systemCall("chown", path: file.path, errno: errno)
        }
    }
}
