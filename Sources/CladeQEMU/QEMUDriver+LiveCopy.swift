#if canImport(Glibc)
import Glibc
#endif
import CLinuxShims
import CladeVMM
import Foundation

/// When a QEMU machine's RAM can be copied live (`background-snapshot`, see
/// `QEMUMachine+LiveCopy.swift`).
extension QEMUDriver {
    /// `statfs` magic of tmpfs (and of the shmem behind memfd).
    static let tmpfsMagic: Int = 0x0102_1994
    static let unprivilegedUserfaultfdSetting = "/proc/sys/vm/unprivileged_userfaultfd"

    /// QEMU write-protects RAM with userfaultfd, which registers write protection on anonymous
    /// memory, memfd and tmpfs files only (an ext4 file is refused); and QEMU 7.2 asks the
    /// kernel for a userfaultfd with the system call, which an unprivileged process gets only
    /// with `vm.unprivileged_userfaultfd=1` (it does not use `/dev/userfaultfd`).
    public func liveMemoryCopyBlocker(memoryFile: URL, unprivilegedProcess: Bool) -> String? {
        var type: UInt = 0
        let resolved = memoryFile.resolvingSymlinksInPath()
        guard clade_statfs_type(resolved.path, &type) == 0 else {
            return "cannot tell where its memory lives (\(resolved.path): \(String(cString: strerror(errno))))"
        }
        guard Int(type) == Self.tmpfsMagic else {
            return "its memory is mapped from \(resolved.path), which is not on tmpfs, and QEMU write-protects guest memory only on tmpfs or memfd; "
                + "fork it with `--memory-placement ram` (the HTTP APIs do when live branches are possible)"
        }
        return userfaultfdBlocker(unprivilegedProcess: unprivilegedProcess)
    }

    func userfaultfdBlocker(unprivilegedProcess: Bool) -> String? {
        guard let setting = try? String(contentsOfFile: Self.unprivilegedUserfaultfdSetting, encoding: .utf8) else {
            return "this kernel has no userfaultfd (\(Self.unprivilegedUserfaultfdSetting) is missing)"
        }
        guard unprivilegedProcess, setting.trimmingCharacters(in: .whitespacesAndNewlines) != "1" else { return nil }
        return "its QEMU runs unprivileged and this host gives unprivileged processes no userfaultfd (vm.unprivileged_userfaultfd=0); "
            + "`sysctl -w vm.unprivileged_userfaultfd=1` allows live branches (it also lets every local user handle page faults with userfaultfd)"
    }

    func liveBranchCheck() -> BackendCheck {
        let blocker = userfaultfdBlocker(unprivilegedProcess: true)
        return BackendCheck(
            name: "live branch", ok: blocker == nil, warningOnly: true,
            detail: blocker.map { "confined sandboxes branch with --mode diff: \($0)" } ?? "confined sandboxes placed in RAM (--memory-placement ram) can branch live",
            fix: blocker == nil ? nil : "sysctl -w vm.unprivileged_userfaultfd=1 (optional)")
    }
}
