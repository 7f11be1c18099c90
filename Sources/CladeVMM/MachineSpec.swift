import Foundation

/// The accelerator a backend runs guests with.
public enum Accelerator: String, Codable, Sendable {
    case kvm
    case tcg
}

/// Everything needed to start one machine, in no hypervisor's terms. The backend decides the
/// device list (the same for every machine, so a restore recreates exactly the machine that was
/// saved) and the names of its own runtime files inside ``runtimeDirectory``.
public struct MachineSpec: Sendable {
    public var name: String
    public var memoryMiB: Int
    public var cpus: Int
    public var accelerator: Accelerator
    public var kernel: URL
    public var initrd: URL
    public var kernelCommandLine: String
    /// The top disk layer the guest writes to.
    public var rootDisk: URL
    /// The file that backs guest RAM.
    public var memoryFile: URL
    /// Where the backend keeps the machine's sockets, pid file and console log.
    public var runtimeDirectory: URL
    /// Host port on 127.0.0.1 where the guest agent's TCP port is reachable.
    public var agentPort: Int
    public var mac: String
    /// Start paused, waiting for saved state, with RAM mapped private so the guest's writes never
    /// reach the snapshot's memory file.
    public var restoring: Bool = false
    /// Map RAM shared even when restoring: for resuming a cold-booted sandbox whose memory file is
    /// its own (nothing else maps it), so the next capture needs no RAM copy.
    public var restoreIntoSharedMemory: Bool = false
    /// The kind of state the restore will load (it decides what the machine expects to receive).
    public var restoredStateKind: SavedStateKind = .memoryInSharedFile
    /// How the hypervisor process is confined (none of it changes the device list, so a snapshot
    /// restores under any confinement).
    public var confinement = MachineConfinement.none
    /// A tap device, open in this process, that carries the guest's NIC instead of user-mode
    /// networking: a Kubernetes pod's network namespace (``PodNetwork``). The NIC keeps its
    /// place in the device list, so any snapshot restores onto it; the agent is then reached at
    /// ``agentPort`` through a relay the attachment's owner runs, not through a forward.
    public var guestNetworkDescriptor: Int32?

    public init(
        name: String, memoryMiB: Int, cpus: Int, accelerator: Accelerator, kernel: URL, initrd: URL,
        kernelCommandLine: String, rootDisk: URL, memoryFile: URL, runtimeDirectory: URL, agentPort: Int, mac: String
    ) {
        self.name = name
        self.memoryMiB = memoryMiB
        self.cpus = cpus
        self.accelerator = accelerator
        self.kernel = kernel
        self.initrd = initrd
        self.kernelCommandLine = kernelCommandLine
        self.rootDisk = rootDisk
        self.memoryFile = memoryFile
        self.runtimeDirectory = runtimeDirectory
        self.agentPort = agentPort
        self.mac = mac
    }

    /// The guest agent's TCP port inside the VM.
    public static let guestAgentPort = 8888
    /// Smallest and largest memory sizes clade accepts, in MiB.
    public static let memoryRange = 64...65536
    public static let cpuRange = 1...64

    /// A random locally administered unicast MAC in the 52:54:00 range.
    public static func randomMAC() -> String {
        let tail = (0..<3).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }
        return (["52", "54", "00"] + tail).joined(separator: ":")
    }
}
