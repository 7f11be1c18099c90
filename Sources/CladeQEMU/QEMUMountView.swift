import CladeStore
import CladeVMM
import Foundation

/// A confined QEMU's view of the filesystem: it starts in a mount namespace of its own, where a
/// small tmpfs is built at `<machine directory>/jail` and QEMU chroots into it (`-chroot`) once it
/// has opened its startup files. The tmpfs holds `/usr` (and the `/bin`, `/lib`… links into it)
/// read-only, for the modules QEMU loads late and the `cat` that migration's `exec:` runs; the
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

    /// Runs as root inside the new namespace: `$1` is the jail root, `$2` the machine directory,
    /// the rest QEMU's command. Paths travel as arguments, never inside the script's text.
    static let script = """
        set -eu
        root=$1; machine=$2; shift 2
        mount -t tmpfs -o mode=0755,size=1m,nosuid clade-jail "$root"
        for name in \(systemDirectories.joined(separator: " ")); do
            if [ -L "/$name" ]; then ln -s "$(readlink "/$name")" "$root/$name"
            elif [ -d "/$name" ]; then mkdir "$root/$name"; mount --bind "/$name" "$root/$name"; mount -o remount,bind,ro,nosuid "$root/$name"
            fi
        done
        mkdir "$root/dev"
        for name in \(deviceNodes.joined(separator: " ")); do
            if [ -e "/dev/$name" ]; then : > "$root/dev/$name"; mount --bind "/dev/$name" "$root/dev/$name"; fi
        done
        mkdir -p "$root$machine"
        mount --bind "$machine" "$root$machine"
        exec "$@"
        """

    /// The program and arguments that start `qemu` with `arguments` inside a fresh mount view.
    static func wrap(qemu: URL, arguments: [String], machineDirectory: URL) throws -> (program: URL, arguments: [String]) {
        guard let unshare = ExternalCommand.locate("unshare") else {
            throw VMMError.backendMissing(backend: "qemu", program: "unshare", fix: "apt-get install util-linux")
        }
        guard let shell = ExternalCommand.locate("sh") else {
            throw VMMError.backendMissing(backend: "qemu", program: "sh", fix: "apt-get install dash")
        }
        let root = root(of: machineDirectory)
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        return (unshare, [
            "--mount", "--propagation", "private", "--", shell.path, "-c", script, "clade-jail",
            root.path, machineDirectory.standardizedFileURL.path, qemu.path,
        ] + arguments + ["-chroot", root.path])
    }
}
