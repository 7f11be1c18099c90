#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The root of everything clade writes on a host, and the fixed layout beneath it.
///
/// Chosen by `--home DIR`, else `CLADE_HOME`, else `/var/lib/clade` for root and
/// `~/.local/share/clade` for anyone else.
public struct CladeHome: Sendable, Equatable {
    public let root: URL

    public init(root: URL) {
        self.root = root.standardizedFileURL
    }

    /// Resolves the home from an explicit option, the environment and the user.
    public static func resolve(explicit: String?, environment: [String: String] = ProcessInfo.processInfo.environment) -> CladeHome {
        if let explicit, !explicit.isEmpty { return CladeHome(root: URL(fileURLWithPath: explicit)) }
        if let fromEnvironment = environment["CLADE_HOME"], !fromEnvironment.isEmpty {
            return CladeHome(root: URL(fileURLWithPath: fromEnvironment))
        }
        if getuid() == 0 { return CladeHome(root: URL(fileURLWithPath: "/var/lib/clade")) }
        let home = environment["HOME"] ?? NSHomeDirectory()
        return CladeHome(root: URL(fileURLWithPath: home).appendingPathComponent(".local/share/clade"))
    }

    public var blobs: URL { root.appendingPathComponent("blobs/sha256") }
    public var images: URL { root.appendingPathComponent("images") }
    public var sandboxes: URL { root.appendingPathComponent("sandboxes") }
    public var snapshots: URL { root.appendingPathComponent("snapshots") }
    public var temporary: URL { root.appendingPathComponent("tmp") }
    public var locks: URL { root.appendingPathComponent("locks") }
    public var kernel: URL { root.appendingPathComponent("kernel") }
    public var state: URL { root.appendingPathComponent("state") }

    /// Creates the layout if needed. Fails with an actionable error when the root cannot be written.
    public func prepare() throws {
        for directory in [blobs, images, sandboxes, snapshots, temporary, locks, state] {
            do {
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            } catch {
                throw StoreError.notWritable(path: root.path, reason: "\(error.localizedDescription)")
            }
        }
    }

    /// A fresh private directory under `tmp/`, on the store's filesystem so renames into place are atomic.
    public func makeTemporaryDirectory(prefix: String) throws -> URL {
        try prepare()
        let url = temporary.appendingPathComponent("\(prefix)-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: false)
        return url
    }
}
