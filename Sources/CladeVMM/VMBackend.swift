import Foundation

/// What a backend can do beyond launching and stopping machines. The engine checks these before
/// it starts an operation, so a backend that lacks one is refused up front with
/// ``VMMError/unsupported(backend:operation:)`` instead of failing half-way.
public struct BackendCapabilities: OptionSet, Sendable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// Saves device state while RAM stays in the shared memory file (a snapshot in milliseconds).
    public static let stateWithSharedMemory = BackendCapabilities(rawValue: 1 << 0)
    /// Saves device state only, with no RAM at all (branches and standby of forks).
    public static let devicesOnlyState = BackendCapabilities(rawValue: 1 << 1)
    /// Finds the pages a restored guest wrote since its restore (diff branches, standby of forks).
    public static let dirtyPageCapture = BackendCapabilities(rawValue: 1 << 2)
    /// Reads every page of guest RAM while paused (full branches).
    public static let fullMemoryCapture = BackendCapabilities(rawValue: 1 << 3)
    /// Freezes the disk a running guest writes onto a new top layer.
    public static let liveDiskFreeze = BackendCapabilities(rawValue: 1 << 4)
    /// Pauses and continues vCPUs without saving anything.
    public static let pause = BackendCapabilities(rawValue: 1 << 5)
    /// Forwards a host TCP port to a guest port while the guest runs.
    public static let portForwarding = BackendCapabilities(rawValue: 1 << 6)
    /// Copies guest RAM into a new memory file while the guest runs (live branches).
    public static let liveMemoryCopy = BackendCapabilities(rawValue: 1 << 7)

    public static let all: BackendCapabilities = [
        .stateWithSharedMemory, .devicesOnlyState, .dirtyPageCapture, .fullMemoryCapture, .liveDiskFreeze, .pause, .portForwarding, .liveMemoryCopy,
    ]

    /// The operation names used in ``VMMError/unsupported(backend:operation:)`` messages.
    public var operationNames: [String] {
        var names: [String] = []
        if contains(.stateWithSharedMemory) { names.append("save state with RAM in the shared memory file") }
        if contains(.devicesOnlyState) { names.append("save device state only") }
        if contains(.dirtyPageCapture) { names.append("capture dirty pages") }
        if contains(.fullMemoryCapture) { names.append("capture all guest memory") }
        if contains(.liveDiskFreeze) { names.append("freeze the disk of a running guest") }
        if contains(.pause) { names.append("pause") }
        if contains(.portForwarding) { names.append("publish a guest port") }
        if contains(.liveMemoryCopy) { names.append("copy guest memory while the guest runs") }
        return names
    }
}

/// A host check a backend contributes to `clade doctor`.
public struct BackendCheck: Sendable {
    public var name: String
    public var ok: Bool
    /// True when a failure is a warning only (clade still works).
    public var warningOnly: Bool
    public var detail: String
    public var fix: String?

    public init(name: String, ok: Bool, warningOnly: Bool = false, detail: String, fix: String? = nil) {
        self.name = name
        self.ok = ok
        self.warningOnly = warningOnly
        self.detail = detail
        self.fix = fix
    }
}

/// A hypervisor backend: it launches machines, re-attaches to running ones after a restart of
/// clade, and owns the disk-image format its machines use.
///
/// Everything hypervisor-specific lives behind this protocol, in one module per hypervisor
/// (`CladeQEMU` today). The engine speaks only to it and to ``VMHandle``.
public protocol VMBackend: Sendable {
    /// A short name recorded in snapshot metadata, e.g. `qemu`.
    var name: String { get }
    var capabilities: BackendCapabilities { get }
    /// The disk chain format of this backend's machines.
    var disks: any DiskChain { get }
    /// The backend's version, e.g. `7.2.22`; throws with the install command when it is missing.
    func version() throws -> String
    /// Starts a machine in the background. With ``MachineSpec/restoring`` set it waits, paused,
    /// for ``VMHandle/restoreState(from:kind:)``.
    func launch(_ spec: MachineSpec) async throws -> any VMHandle
    /// A handle on a machine this or an earlier clade process launched in `runtimeDirectory`.
    /// `pid` nil means "whatever process the directory records".
    func attach(runtimeDirectory: URL, pid: Int32?) -> any VMHandle
    /// The device drivers, in order, that a restore must recreate; recorded in snapshot metadata
    /// and compared before a restore.
    func deviceLayout(for spec: MachineSpec) -> [String]
    /// Chooses the accelerator by booting `kernel` with `initrd` (whose init prints
    /// ``AcceleratorChoice/probeMarker`` and powers off) under hardware virtualization.
    func probeAccelerator(kernel: URL, initrd: URL, workDirectory: URL) async throws -> AcceleratorChoice
    /// What `clade doctor` should report about this backend's tools on this host.
    func hostChecks() -> [BackendCheck]
    /// Why a running machine whose RAM is mapped from `memoryFile`, by a hypervisor process that
    /// runs unprivileged or not, cannot have its memory copied live on this host; nil when it can.
    func liveMemoryCopyBlocker(memoryFile: URL, unprivilegedProcess: Bool) -> String?
}

extension VMBackend {
    /// Launches a machine paused for a restore and loads `state` into it, then runs it.
    public func restore(_ spec: MachineSpec, from state: URL, kind: SavedStateKind) async throws -> any VMHandle {
        var spec = spec
        spec.restoring = true
        spec.restoredStateKind = kind
        let handle = try await launch(spec)
        do {
            try await handle.restoreState(from: state, kind: kind)
        } catch {
            await handle.stop()
            throw error
        }
        return handle
    }

    public func liveMemoryCopyBlocker(memoryFile: URL, unprivilegedProcess: Bool) -> String? {
        capabilities.contains(.liveMemoryCopy) ? nil : "the \(name) backend cannot copy guest memory while the guest runs"
    }

    /// Throws ``VMMError/unsupported(backend:operation:)`` unless the backend has `needed`.
    public func require(_ needed: BackendCapabilities) throws {
        let missing = needed.subtracting(capabilities)
        guard missing.isEmpty else {
            throw VMMError.unsupported(backend: name, operation: missing.operationNames.joined(separator: ", "))
        }
    }
}
