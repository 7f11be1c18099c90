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
            "etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
            // busybox is linked statically against glibc: without these its name and service
            // lookups (wget, nc, ping by name) take paths that fail or crash.
            "etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n",
            "etc/services": Self.services,
            "etc/protocols": "ip 0 IP\nicmp 1 ICMP\ntcp 6 TCP\nudp 17 UDP\nipv6-icmp 58 IPv6-ICMP\n",
            "etc/resolv.conf": "nameserver 10.0.2.3\n",
            "etc/os-release": "NAME=\"clade default\"\nID=clade\n",
        ]
        for (path, content) in files {
            try Data(content.utf8).write(to: root.appendingPathComponent(path))
        }
        try FileManager.default.createDirectory(at: root.appendingPathComponent("var/www"), withIntermediateDirectories: true)
        chmod(root.appendingPathComponent("tmp").path, 0o1777)
        chmod(root.appendingPathComponent("var/tmp").path, 0o1777)
    }

    /// The well-known ports busybox's tools may name.
    static let services = [
        ("ftp", 21), ("ssh", 22), ("telnet", 23), ("smtp", 25), ("domain", 53), ("http", 80), ("pop3", 110), ("ntp", 123),
        ("imap", 143), ("https", 443), ("rsync", 873), ("mysql", 3306), ("postgresql", 5432), ("redis", 6379), ("http-alt", 8080),
    ].map { "\($0.0)\t\($0.1)/tcp\n" }.joined() + "domain\t53/udp\nntp\t123/udp\n"
}
