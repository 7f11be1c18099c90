import CladeStore
import Foundation

/// The directory tree of the built-in `default` image: busybox and a minimal /etc.
public enum DefaultImage {
    public static let name = "default"

    /// Writes the tree into `root` (which must exist and be empty).
    public static func populate(_ root: URL, busybox: URL = URL(fileURLWithPath: "/bin/busybox")) throws {
        guard try FileSystem.exists(busybox) else { throw GuestError.toolMissing("busybox (apt-get install busybox-static)") }
        let fileManager = FileManager.default
        for directory in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "home", "var/tmp", "tmp", "mnt"] {
            try fileManager.createDirectory(at: root.appendingPathComponent(directory), withIntermediateDirectories: true)
        }
        try fileManager.copyItem(at: busybox, to: root.appendingPathComponent("bin/busybox"))
        for applet in try ExternalCommand(busybox.path, ["--list-full"]).check().stdout.split(separator: "\n") {
            let path = root.appendingPathComponent(String(applet))
            if try applet == "bin/busybox" || FileSystem.exists(path) { continue }
            try fileManager.createSymbolicLink(atPath: path.path, withDestinationPath: "/bin/busybox")
        }
        let files = [
            "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            "etc/group": "root:x:0:\nnogroup:x:65534:\n",
            "etc/hosts": "127.0.0.1 localhost\n",
            "etc/resolv.conf": "nameserver 10.0.2.3\n",
            "etc/os-release": "NAME=\"clade default\"\nID=clade\n",
        ]
        for (path, content) in files {
            try Data(content.utf8).write(to: root.appendingPathComponent(path))
        }
        chmod(root.appendingPathComponent("tmp").path, 0o1777)
        chmod(root.appendingPathComponent("var/tmp").path, 0o1777)
    }
}
