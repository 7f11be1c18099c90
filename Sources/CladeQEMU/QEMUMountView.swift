import CladeStore
import CladeVMM
import Foundation

/// A confined QEMU's view of the filesystem: it starts in a mount namespace of its own, where a
/// small tmpfs is built at `<machine directory>/jail` and QEMU chroots into it (`-chroot`) once it
/// has opened its startup files. The tmpfs holds `/usr` (and the `/bin`, `/lib`… links into it)
/// read-only, for the modules QEMU loads late; the
/// device nodes a VMM uses; and the machine's own directory at its real path, read-write, so QMP
/// commands naming files there work unchanged. The namespace dies with QEMU: nothing is mounted
/// on the host, and nothing is left to clean up.
enum QEMUMountView {
    /// The directory the jail's tmpfs is mounted on (inside the namespace only).
    static func root(of machineDirectory: URL) -> URL { machineDirectory.appendingPathComponent("jail") }

    /// Host directories that are links into `/usr` on a merged-usr system, or directories bound
    /// read-only on an older layout.
    static let systemDirectories = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"]
    static let deviceNodes = ["null", "zero", "full", "random", "urandom", "kvm"]

    /// The jail of the machine `spec` describes, and the arguments QEMU needs to use it. As
    /// root, QEMU opens its files and then chroots into the view (`-chroot`) before dropping to
    /// the sandbox's uid. In an unprivileged user namespace QEMU keeps capabilities inside it, so
    /// it must never hold the old root: the view is pivoted into before QEMU starts, with the
    /// files it opens outside its directory (kernel, initrd, disk backing files) bound read-only.
    static func jail(for spec: MachineSpec, keeping descriptor: Int32 = -1) throws -> (jail: DetachedLauncher.Jail, arguments: [String]) {
        let machineDirectory = spec.runtimeDirectory.standardizedFileURL
        let root = root(of: machineDirectory)
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        var jail = DetachedLauncher.Jail()
        jail.root = root
        jail.machineDirectory = machineDirectory
        jail.systemDirectories = systemDirectories
        jail.devices = deviceNodes
        jail.keptDescriptor = descriptor
        guard spec.confinement.userNamespace else { return (jail, ["-chroot", root.path]) }
        jail.userNamespace = true
        jail.pivot = true
        let inside = machineDirectory.path + "/"
        let outside = ([spec.kernel, spec.initrd] + (try QCOW2Chain.files(below: spec.rootDisk)))
            .map(\.standardizedFileURL).filter { !$0.path.hasPrefix(inside) }
        jail.readOnlyFiles = Array(Set(outside)).sorted { $0.path < $1.path }
        return (jail, [])
    }
}
