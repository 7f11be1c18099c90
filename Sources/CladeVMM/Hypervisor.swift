import Foundation

/// A hypervisor driver. QEMU is the only one today; another is one new folder
/// implementing this protocol.
public protocol Hypervisor: Sendable {
    /// A short name recorded in metadata, e.g. `qemu`.
    var name: String { get }
    /// The hypervisor's version, e.g. `7.2.22`.
    func version() throws -> String
    /// Starts a VM in the background and returns its process id once it is running.
    func launch(_ spec: MachineSpec) async throws -> Int32
    /// Stops a VM: politely through its control socket, then by signal. Returns when the process is gone.
    func stop(pid: Int32, controlSocket: URL, marker: String) async
    /// Pauses the VM and writes its device state (not its RAM, which stays in the shared
    /// memory file) to `file`. The VM stays paused; call ``resume(controlSocket:)`` to continue it.
    func captureDeviceState(controlSocket: URL, to file: URL) async throws
    /// Loads device state into a VM started with `restoring` set, then runs it.
    /// `ignoreShared` matches how the state was saved: with `x-ignore-shared` (a snapshot) or as
    /// device-only state (a branch).
    func restoreDeviceState(controlSocket: URL, from file: URL, ignoreShared: Bool) async throws
    /// Continues a paused VM.
    func resume(controlSocket: URL) async throws
    /// Stops the VM's vCPUs (QMP `stop`).
    func pause(controlSocket: URL) async throws
    /// Pauses the VM and writes its device state only (no RAM), for branches and standby.
    func pauseAndSaveDevices(controlSocket: URL, to file: URL) async throws
    /// Makes an existing overlay (backed by the current disk) the disk the guest writes to.
    func switchDisk(controlSocket: URL, to overlay: URL) async throws
}

/// Failures starting or controlling a VM.
public enum VMMError: Error, CustomStringConvertible, Sendable {
    case qemuMissing
    case launchFailed(reason: String)
    case socketPathTooLong(String)
    case accelerator(String)
    case migrationFailed(String)

    public var description: String {
        switch self {
        case .qemuMissing:
            return "qemu-system-x86_64 was not found; install it with scripts/install-deps.sh (apt-get install qemu-system-x86 qemu-utils)"
        case .launchFailed(let reason):
            return "QEMU failed to start: \(reason)"
        case .socketPathTooLong(let path):
            return "the socket path \(path) is longer than the 107 bytes Linux allows; use a shorter --home"
        case .accelerator(let reason):
            return reason
        case .migrationFailed(let reason):
            return "QEMU could not save or load the VM state: \(reason)"
        }
    }
}
