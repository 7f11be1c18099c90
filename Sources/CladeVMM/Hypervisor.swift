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
}

/// Failures starting or controlling a VM.
public enum VMMError: Error, CustomStringConvertible, Sendable {
    case qemuMissing
    case launchFailed(reason: String)
    case socketPathTooLong(String)
    case accelerator(String)

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
        }
    }
}
