import CladeStore
import CladeVMM
import Foundation

/// A minimal initrd whose init prints the probe marker and powers off: just enough to prove
/// that a guest reaches user space under an accelerator.
public enum ProbeInitrd {
    public static func build(in directory: URL, busybox: URL = URL(fileURLWithPath: "/bin/busybox")) throws -> URL {
        guard try FileSystem.exists(busybox) else { throw GuestError.toolMissing("busybox (apt-get install busybox-static)") }
        let root = directory.appendingPathComponent("probe-root")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("bin"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: busybox, to: root.appendingPathComponent("bin/busybox"))
        let initURL = root.appendingPathComponent("init")
        try Data("#!/bin/busybox sh\necho \(AcceleratorChoice.probeMarker)\n/bin/busybox poweroff -f\n".utf8).write(to: initURL)
        chmod(initURL.path, 0o755)
        let archive = directory.appendingPathComponent("probe.cpio")
        try ExternalCommand(
            "sh", ["-c", "printf 'bin\\nbin/busybox\\ninit\\n' | cpio --quiet -o -H newc -R 0:0 > \"$1\"", "sh", archive.path],
            currentDirectory: root
        ).check()
        return archive
    }
}
