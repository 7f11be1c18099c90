#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Keeps the guest's own name resolvable: `/etc/hosts` maps it to 127.0.1.1, the address Debian's
/// installer gives a host's name. Programs that look their host up (sudo, Java, many servers)
/// otherwise stall or fail ("unable to resolve host"), and every fork gets a new name.
enum HostsFile {
    static let path = "/etc/hosts"
    static let address = "127.0.1.1"

    /// `text` with every line for ``address`` replaced by one for `hostname`, loopback kept.
    static func claiming(_ hostname: String, in text: String) -> String {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        lines.removeAll { $0.split(whereSeparator: { $0 == " " || $0 == "\t" }).first.map(String.init) == address }
        if !lines.contains(where: { $0.hasPrefix("127.0.0.1") }) { lines.insert("127.0.0.1\tlocalhost", at: 0) }
        lines.append("\(address)\t\(hostname)")
        return lines.joined(separator: "\n") + "\n"
    }

    /// Rewrites `/etc/hosts` for the current hostname. Returns why not when it cannot (a
    /// read-only root).
    ///
    /// A new name as long as the old one (a fork's sandbox id replacing its snapshot's) is
    /// written over the old bytes in place; any other change is a new file renamed over the old.
    /// Creating, renaming and evicting an inode run far more of the filesystem than an
    /// overwrite, and a restored guest under emulation pays for every kernel path it runs the
    /// first time (~5,000 translated blocks for the rename against ~1,000). Nothing can read a
    /// half-written file: this runs while the guest's init is starting, or in an identity's
    /// follow-up, while user processes are still frozen and new ones wait (see IdentityFollowUp).
    static func update() -> String? {
        // Only the guest's init owns the guest's files: an agent run on a host (tests) leaves it alone.
        guard getpid() == 1 else { return nil }
        var name = [CChar](repeating: 0, count: 256)
        guard gethostname(&name, name.count) == 0 else { return "cannot read the hostname" }
        let hostname = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard !hostname.isEmpty else { return nil }
        guard let current = readWhole(path, limit: 1 << 20) else { return "\(path) is unreadable or over 1 MiB; left as it is" }
        let wanted = claiming(hostname, in: current)
        if wanted == current { return nil }
        if wanted.utf8.count == current.utf8.count, overwrite(path, with: Array(wanted.utf8)) { return nil }
        let staging = path + ".clade-new"
        let fd = open(staging, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return "cannot write \(staging): \(String(cString: strerror(errno)))" }
        let bytes = Array(wanted.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == bytes.count, rename(staging, path) == 0 else {
            unlink(staging)
            return "cannot replace \(path): \(String(cString: strerror(errno)))"
        }
        return nil
    }

    /// Writes `bytes` over the start of the existing file at `path`; false when that failed part-way
    /// or not at all (the caller then replaces the file whole).
    private static func overwrite(_ path: String, with bytes: [UInt8]) -> Bool {
        let fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } == bytes.count
    }

    /// The whole file (empty when it does not exist), or nil past `limit` bytes or on an error.
    private static func readWhole(_ path: String, limit: Int) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return errno == ENOENT ? "" : nil }
        defer { close(fd) }
        var contents: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16_384)
        while true {
            let count = read(fd, &chunk, chunk.count)
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { return nil }
            if count == 0 { break }
            contents += chunk[0..<count]
            if contents.count > limit { return nil }
        }
        return String(decoding: contents, as: UTF8.self)
    }
}
