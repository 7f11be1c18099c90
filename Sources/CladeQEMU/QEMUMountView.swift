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

    /// The mount view of the machine in `machineDirectory`, and the `-chroot` QEMU needs to enter it.
    static func prepare(machineDirectory: URL) throws -> (view: DetachedLauncher.MountView, arguments: [String]) {
        let root = root(of: machineDirectory)
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        let view = DetachedLauncher.MountView(
            root: root, machineDirectory: machineDirectory.standardizedFileURL, systemDirectories: systemDirectories, devices: deviceNodes)
        return (view, ["-chroot", root.path])
    }
}
