import Foundation

/// The accelerator QEMU runs guests with.
public enum Accelerator: String, Codable, Sendable {
    case kvm
    case tcg
}

/// Everything needed to start one VM. The device list and its order are fixed by
/// ``QEMUCommandLine`` so that a restore can recreate exactly the same machine.
public struct MachineSpec: Sendable {
    public var name: String
    public var memoryMiB: Int
    public var cpus: Int
    public var accelerator: Accelerator
    public var kernel: URL
    public var initrd: URL
    public var kernelCommandLine: String
    /// qcow2 overlay the guest writes to.
    public var rootDisk: URL
    /// File backing guest RAM (`memory-backend-file`).
    public var memoryFile: URL
    public var qmpSocket: URL
    public var agentSocket: URL
    public var console: URL
    public var pidFile: URL
    /// Host port on 127.0.0.1 forwarded to the agent's TCP port in the guest.
    public var agentPort: Int
    public var mac: String
    /// Start paused, waiting for device state (`-incoming defer`), with RAM mapped private
    /// (`share=off`) so the guest's writes never reach the snapshot's memory file.
    public var restoring: Bool = false
    /// Map RAM `share=on` even when restoring: for resuming a cold-booted sandbox whose memory
    /// file is its own (nothing else maps it), so the next capture needs no RAM copy.
    public var restoreIntoSharedMemory: Bool = false
    /// The device state to load is a device-only save (`xen-save-devices-state`), which carries no
    /// configuration section, so QEMU must not expect one.
    public var deviceStateWithoutConfiguration: Bool = false
    /// Extra QEMU arguments appended after the machine definition (e.g. `-loadvm NAME` in benchmarks).
    public var extraArguments: [String] = []

    public init(
        name: String, memoryMiB: Int, cpus: Int, accelerator: Accelerator, kernel: URL, initrd: URL,
        kernelCommandLine: String, rootDisk: URL, memoryFile: URL, qmpSocket: URL, agentSocket: URL,
        console: URL, pidFile: URL, agentPort: Int, mac: String
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
        self.qmpSocket = qmpSocket
        self.agentSocket = agentSocket
        self.console = console
        self.pidFile = pidFile
        self.agentPort = agentPort
        self.mac = mac
    }

    /// The guest agent's TCP port inside the VM.
    public static let guestAgentPort = 8888
    /// Smallest and largest memory sizes clade accepts, in MiB.
    public static let memoryRange = 64...65536
    public static let cpuRange = 1...64

    /// A random locally administered unicast MAC in QEMU's 52:54:00 range.
    public static func randomMAC() -> String {
        let tail = (0..<3).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }
        return (["52", "54", "00"] + tail).joined(separator: ":")
    }
}

/// Builds QEMU's argument list for a ``MachineSpec``.
public enum QEMUCommandLine {
    /// TCG's translation cache per process, in MiB; QEMU's default costs ~40 MB of RSS per VM.
    public static let tcgTranslationCacheMiB = 32

    public static func arguments(for spec: MachineSpec, daemonize: Bool = true) -> [String] {
        var arguments = [
            "-name", spec.name,
            "-machine", "microvm,memory-backend=ram",
        ]
        switch spec.accelerator {
        case .kvm: arguments += ["-accel", "kvm", "-cpu", "host"]
        case .tcg: arguments += ["-accel", "tcg,tb-size=\(tcgTranslationCacheMiB)", "-cpu", "max"]
        }
        arguments += [
            "-m", "\(spec.memoryMiB)M",
            "-smp", "\(spec.cpus)",
            "-object", "memory-backend-file,id=ram,size=\(spec.memoryMiB)M,mem-path=\(spec.memoryFile.path),share=\(spec.restoring && !spec.restoreIntoSharedMemory ? "off" : "on")",
            "-nodefaults", "-no-user-config", "-display", "none",
            "-serial", "file:\(spec.console.path)",
            "-kernel", spec.kernel.path,
            "-initrd", spec.initrd.path,
            "-append", spec.kernelCommandLine,
            "-no-reboot",
            "-drive", "id=root,file=\(spec.rootDisk.path),format=qcow2,if=none,discard=unmap",
            "-device", "virtio-blk-device,drive=root",
            "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:\(spec.agentPort)-:\(MachineSpec.guestAgentPort)",
            "-device", "virtio-net-device,netdev=net0,mac=\(spec.mac)",
            "-device", "virtio-serial-device",
            "-chardev", "socket,id=agent,path=\(spec.agentSocket.path),server=on,wait=off",
            "-device", "virtserialport,chardev=agent,name=clade.agent",
            "-device", "virtio-rng-device",
            "-qmp", "unix:\(spec.qmpSocket.path),server=on,wait=off",
            "-pidfile", spec.pidFile.path,
        ]
        if spec.restoring { arguments += ["-S", "-incoming", "defer"] }
        if spec.deviceStateWithoutConfiguration { arguments += ["-global", "migration.send-configuration=off"] }
        arguments += spec.extraArguments
        if daemonize { arguments.append("-daemonize") }
        return arguments
    }

    /// The device drivers, in order, that a restore must recreate (recorded in snapshot.json).
    public static func deviceDrivers(for spec: MachineSpec) -> [String] {
        let arguments = self.arguments(for: spec, daemonize: false)
        return zip(arguments, arguments.dropFirst()).filter { $0.0 == "-device" }.map { String($0.1.split(separator: ",")[0]) }
    }
}
