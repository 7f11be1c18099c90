import CladeVMM
import Foundation

/// Builds QEMU's argument list for a ``MachineSpec``. The device list and its order never vary,
/// so a restore recreates exactly the machine that was saved.
public enum QEMUCommandLine {
    /// TCG's translation cache per process, in MiB; QEMU's default costs ~40 MB of RSS per VM.
    public static let tcgTranslationCacheMiB = 32

    public static func arguments(for spec: MachineSpec, extra: [String] = []) -> [String] {
        let files = QEMURuntimeFiles(directory: spec.runtimeDirectory)
        var arguments = [
            "-name", spec.name,
            "-machine", "microvm,memory-backend=ram",
        ]
        switch spec.accelerator {
        case .kvm: arguments += ["-accel", "kvm", "-cpu", "host"]
        case .tcg: arguments += ["-accel", "tcg,tb-size=\(tcgTranslationCacheMiB)", "-cpu", "max"]
        }
        let shared = !spec.restoring || spec.restoreIntoSharedMemory
        arguments += [
            "-m", "\(spec.memoryMiB)M",
            "-smp", "\(spec.cpus)",
            "-object", "memory-backend-file,id=ram,size=\(spec.memoryMiB)M,mem-path=\(spec.memoryFile.path),share=\(shared ? "on" : "off")",
            "-nodefaults", "-no-user-config", "-display", "none",
            "-serial", "file:\(files.console.path)",
            "-kernel", spec.kernel.path,
            "-initrd", spec.initrd.path,
            "-append", spec.kernelCommandLine,
            "-no-reboot",
            "-drive", "id=root,file=\(spec.rootDisk.path),format=qcow2,if=none,discard=unmap",
            "-device", "virtio-blk-device,drive=root",
        ]
        arguments += networkArguments(for: spec)
        arguments += [
            "-device", "virtio-serial-device",
            "-chardev", "socket,id=agent,path=\(files.agentSocket.path),server=on,wait=off",
            "-device", "virtserialport,chardev=agent,name=clade.agent",
            "-device", "virtio-rng-device",
            "-qmp", "unix:\(files.qmpSocket.path),server=on,wait=off",
            "-pidfile", files.pidFile.path,
        ]
        arguments += confinementArguments(spec.confinement)
        if spec.restoring { arguments += ["-S", "-incoming", "defer"] }
        // A device-only save carries no configuration section, so QEMU must not expect one.
        if spec.restoring, spec.restoredStateKind == .devicesOnly { arguments += ["-global", "migration.send-configuration=off"] }
        arguments += extra
        return arguments
    }

    /// The guest's NIC and its backend. User-mode networking is always there, since a snapshot's
    /// state carries its section; with a tap of a pod's namespace (kept open as descriptor 4, see
    /// `QEMUDriver`) the NIC moves to the tap and user-mode networking is left with no peer, no
    /// forward and no way out.
    static func networkArguments(for spec: MachineSpec) -> [String] {
        if spec.guestNetworkDescriptor != nil {
            return [
                "-netdev", "user,id=net0,restrict=on",
                "-netdev", "tap,id=pod0,fd=\(keptDescriptorNumber)",
                "-device", "virtio-net-device,netdev=pod0,mac=\(spec.mac)",
            ]
        }
        return [
            "-netdev", "user,id=net0,hostfwd=tcp:\(forwardingAddress(spec.confinement)):\(spec.agentPort)-:\(MachineSpec.guestAgentPort)"
                + (spec.confinement.noOutboundNetwork ? ",restrict=on" : ""),
            "-device", "virtio-net-device,netdev=net0,mac=\(spec.mac)",
        ]
    }

    /// The descriptor number a kept descriptor has in QEMU (`clade_spawn_vmm`).
    static let keptDescriptorNumber = 4

    /// The seccomp filter denies obsolete system calls, resource control (priorities, affinity)
    /// and spawning (fork, exec): QEMU runs without `-daemonize` and moves state through
    /// descriptors clade hands it (`getfd`, `migrate fd:`), so it never needs another process.
    /// Not denied: `elevateprivileges`, since `-runas` calls setuid after the filter is installed
    /// (the filter sets no-new-privileges, so a set-uid program gains nothing anyway).
    static let seccompFilter = "on,obsolete=deny,resourcecontrol=deny,spawn=deny"

    static func confinementArguments(_ confinement: MachineConfinement) -> [String] {
        var arguments: [String] = []
        if confinement.syscallFilter { arguments += ["-sandbox", seccompFilter] }
        if let identity = confinement.identity { arguments += ["-runas", "\(identity.uid):\(identity.gid)"] }
        return arguments
    }

    /// Where QEMU listens for forwarded ports: the host's loopback; inside an unprivileged jail's
    /// network namespace every address of it, since the network helper delivers to its
    /// interface, and that namespace holds nothing else.
    static func forwardingAddress(_ confinement: MachineConfinement) -> String {
        confinement.userNamespace ? "" : "127.0.0.1"
    }

    /// The device drivers, in order, that a restore must recreate (recorded in snapshot.json).
    public static func deviceDrivers(for spec: MachineSpec) -> [String] {
        let arguments = self.arguments(for: spec)
        return zip(arguments, arguments.dropFirst()).filter { $0.0 == "-device" }.map { String($0.1.split(separator: ",")[0]) }
    }

    /// QEMU reports a `hostfwd` rule whose port is taken in these words; the launch is retried
    /// with another port.
    static func isForwardingFailure(_ message: String) -> Bool {
        message.contains("hostfwd") || message.contains("forwarding")
    }
}
