#if canImport(Glibc)
import Glibc
#endif
import CladeVMM
import Foundation

/// An in-memory hypervisor backend: machines are entries in a table, their guest is a
/// ``FakeGuest`` behind a ``FakeAgent`` on the agent port, saved state is the guest's JSON. It
/// implements the whole seam, so the real engine runs bake, fork, branch, standby and kill on it
/// with no VM, and tests can take capabilities away or make restores fail.
public final class FakeBackend: VMBackend, @unchecked Sendable {
    public let name = "fake"
    public let capabilities: BackendCapabilities
    public var disks: any DiskChain { FakeDiskChain() }
    public let machines = FakeMachineTable()
    private let lock = NSLock()
    private var restoresToFail = 0
    private var nextPid: Int32 = 5_000_000  // above any pid_max: never a real process

    public init(capabilities: BackendCapabilities = .all) {
        self.capabilities = capabilities
    }

    /// Makes the next `count` restores fail, as a machine that dies while loading its state would.
    public func failNextRestores(_ count: Int) { lock.withLock { restoresToFail = count } }

    public func takeRestoreFailure() -> Bool {
        lock.withLock {
            guard restoresToFail > 0 else { return false }
            restoresToFail -= 1
            return true
        }
    }

    public func version() throws -> String { "1.0" }

    public func launch(_ spec: MachineSpec) async throws -> any VMHandle {
        if try FileManager.default.attributesOfItem(atPath: spec.rootDisk.path)[.size] == nil {
            throw VMMError.launchFailed(backend: name, reason: "no disk at \(spec.rootDisk.path)")
        }
        if !FileManager.default.fileExists(atPath: spec.memoryFile.path) {
            // Like a shared memory backend file: created at the guest's size, sparse.
            let fd = open(spec.memoryFile.path, O_WRONLY | O_CREAT | O_EXCL, 0o644)
            guard fd >= 0, ftruncate(fd, off_t(spec.memoryMiB) << 20) == 0 else { throw FakeError("cannot create \(spec.memoryFile.path)") }
            close(fd)
        }
        let guest = FakeGuest()
        let agent: FakeAgent
        do {
            agent = try FakeAgent(port: spec.agentPort, guest: guest)
        } catch {
            throw VMMError.agentPortTaken(port: spec.agentPort)
        }
        let pid = lock.withLock { () -> Int32 in
            nextPid += 1
            return nextPid
        }
        try Data("fake console of \(spec.name)\n".utf8).write(to: spec.runtimeDirectory.appendingPathComponent("console.log"))
        let machine = FakeMachineState(pid: pid, spec: spec, guest: guest, agent: agent, paused: spec.restoring)
        machines.put(machine, at: spec.runtimeDirectory)
        return FakeMachine(backend: self, directory: spec.runtimeDirectory, pid: pid)
    }

    public func attach(runtimeDirectory: URL, pid: Int32?) -> any VMHandle {
        FakeMachine(backend: self, directory: runtimeDirectory, pid: pid ?? machines.get(runtimeDirectory)?.pid ?? 0)
    }

    public func deviceLayout(for spec: MachineSpec) -> [String] { ["fake-block", "fake-net", "fake-serial"] }

    public func probeAccelerator(kernel: URL, initrd: URL, workDirectory: URL) async throws -> AcceleratorChoice {
        AcceleratorChoice(accelerator: .tcg, reason: "the fake backend emulates nothing", backendVersion: "1.0")
    }

    public func hostChecks() -> [BackendCheck] { [BackendCheck(name: "fake", ok: true, detail: "in-memory test backend")] }
}

/// One fake machine's mutable state.
public final class FakeMachineState: @unchecked Sendable {
    public let pid: Int32
    public let spec: MachineSpec
    public let guest: FakeGuest
    public let agent: FakeAgent
    private let lock = NSLock()
    private var pausedFlag: Bool
    private(set) var frozenDisks: [URL] = []

    public init(pid: Int32, spec: MachineSpec, guest: FakeGuest, agent: FakeAgent, paused: Bool) {
        self.pid = pid
        self.spec = spec
        self.guest = guest
        self.agent = agent
        self.pausedFlag = paused
    }

    public var paused: Bool {
        get { lock.withLock { pausedFlag } }
        set { lock.withLock { pausedFlag = newValue } }
    }

    public func froze(_ overlay: URL) { lock.withLock { frozenDisks.append(overlay) } }

    /// Host port → guest port forwards the engine asked for.
    private var forwardsByHostPort: [Int: Int] = [:]
    public var forwards: [Int: Int] { lock.withLock { forwardsByHostPort } }
    public func forward(host: Int, guest: Int) { lock.withLock { forwardsByHostPort[host] = guest } }
}

/// Live fake machines by runtime directory.
public final class FakeMachineTable: @unchecked Sendable {
    private let lock = NSLock()
    private var byDirectory: [String: FakeMachineState] = [:]

    public func put(_ machine: FakeMachineState, at directory: URL) { lock.withLock { byDirectory[directory.path] = machine } }
    public func get(_ directory: URL) -> FakeMachineState? { lock.withLock { byDirectory[directory.path] } }
    public func remove(_ directory: URL) { lock.withLock { byDirectory[directory.path] = nil } }
    public var count: Int { lock.withLock { byDirectory.count } }
}

/// What a fake machine's saved state holds.
public struct FakeSavedState: Codable {
    public var kind: String
    public var guest: FakeGuest.State
}

/// A handle on a fake machine.
public struct FakeMachine: VMHandle {
    public let backend: FakeBackend
    public let directory: URL
    public let pid: Int32
    public var backendName: String { backend.name }

    private var state: FakeMachineState? {
        guard let machine = backend.machines.get(directory), machine.pid == pid else { return nil }
        return machine
    }

    private func require() throws -> FakeMachineState {
        guard let state else { throw VMMError.controlFailed(backend: "fake", operation: "reach machine \(pid)", reason: "it is not running") }
        return state
    }

    public var isAlive: Bool { state != nil }

    public func status(timeout: Double) async -> MachineStatus {
        guard let state else { return .unreachable }
        return state.paused ? .paused : .running
    }

    public func pause() async throws { try require().paused = true }
    public func resume() async throws { try require().paused = false }

    public func saveState(to file: URL, kind: SavedStateKind) async throws {
        let machine = try require()
        machine.paused = true
        try JSONEncoder().encode(FakeSavedState(kind: kind.rawValue, guest: machine.guest.snapshot)).write(to: file)
    }

    public func restoreState(from file: URL, kind: SavedStateKind) async throws {
        let machine = try require()
        if backend.takeRestoreFailure() {
            throw VMMError.stateTransferFailed(backend: "fake", reason: "injected restore failure")
        }
        let saved = try JSONDecoder().decode(FakeSavedState.self, from: Data(contentsOf: file))
        guard saved.kind == kind.rawValue else {
            throw VMMError.stateTransferFailed(backend: "fake", reason: "state saved as \(saved.kind) loaded as \(kind.rawValue)")
        }
        machine.guest.restore(saved.guest)
        machine.paused = false
    }

    public func captureMemory(_ selection: PageSelection, memoryFile: URL) async throws -> CapturedMemory {
        guard backend.capabilities.contains(selection == .all ? .fullMemoryCapture : .dirtyPageCapture) else {
            throw VMMError.unsupported(backend: "fake", operation: "capture memory")
        }
        let machine = try require()
        let pageCount = selection == .all ? (machine.spec.memoryMiB << 20) / DirtyPages.pageSize : 1
        var contents = [UInt8](repeating: 0, count: pageCount * DirtyPages.pageSize)
        // The "guest" wrote its hostname into its first page.
        for (index, byte) in machine.guest.snapshot.hostname.utf8.enumerated() { contents[index] = byte }
        let pages = DirtyPages(pages: Array(0..<pageCount), mappingStart: 0, mappingLength: machine.spec.memoryMiB << 20)
        return CapturedMemory(pages: pages, contents: contents)
    }

    public func freezeDisk(onto overlay: URL) async throws {
        guard backend.capabilities.contains(.liveDiskFreeze) else { throw VMMError.unsupported(backend: "fake", operation: "freeze the disk") }
        try require().froze(overlay)
    }

    public func forwardPort(host hostPort: Int, guest guestPort: Int) async throws {
        guard backend.capabilities.contains(.portForwarding) else { throw VMMError.unsupported(backend: "fake", operation: "publish a guest port") }
        try require().forward(host: hostPort, guest: guestPort)
    }

    public func stop() async {
        guard let machine = state else { return }
        machine.agent.shutdownListener()
        backend.machines.remove(directory)
    }

    public func consoleTail(lines: Int) -> String {
        (try? String(contentsOf: directory.appendingPathComponent("console.log"), encoding: .utf8)) ?? ""
    }
}

/// Disk layers as small text files naming their backing file.
public struct FakeDiskChain: DiskChain {
    public let layerFormat = "fakecow"

    public init() {}

    public func createOverlay(at layer: URL, backingName: String, backingFormat: BackingFormat) throws {
        guard !FileManager.default.fileExists(atPath: layer.path) else { throw FakeError("\(layer.path) exists") }
        try Data("fakecow\nbacking=\(backingName)\nformat=\(backingFormat.rawValue)\n".utf8).write(to: layer)
    }

    public func flatten(_ top: URL, into output: URL, backingName: String) throws {
        try Data("fakecow\nbacking=\(backingName)\nformat=raw\nflattened-from=\(top.lastPathComponent)\n".utf8).write(to: output)
    }

    public func inspect(_ layer: URL) throws -> DiskLayerInfo {
        let text = try String(contentsOf: layer, encoding: .utf8)
        let fields = Dictionary(text.split(separator: "\n").compactMap { line -> (String, String)? in
            let parts = line.split(separator: "=", maxSplits: 1)
            return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
        }, uniquingKeysWith: { first, _ in first })
        return DiskLayerInfo(format: layerFormat, backingName: fields["backing"], backingFormat: fields["format"], externalDataFile: nil)
    }

    public func check(_ layer: URL) throws { _ = try inspect(layer) }

    public func createBlank(at file: URL, megabytes: Int) throws { try Data("fakecow\n".utf8).write(to: file) }
}
