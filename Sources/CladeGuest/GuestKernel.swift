import CladeStore
import Foundation

/// A provisioned guest kernel: `vmlinuz`, a `release` file and the virtio modules in `modules/`.
///
/// scripts/provision-kernel.sh extracts these from Debian's linux-image-cloud-amd64 package.
public struct GuestKernel: Sendable {
    /// Modules the initrd loads, in dependency order (virtio_ring before virtio, failover before virtio_net).
    public static let moduleLoadOrder = [
        "virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "failover", "net_failover", "virtio_net",
        "virtio_console", "virtio-rng",
    ]

    public let directory: URL
    public var image: URL { directory.appendingPathComponent("vmlinuz") }
    public var modules: URL { directory.appendingPathComponent("modules") }
    public let release: String

    public init(directory: URL) throws {
        self.directory = directory
        let releaseFile = directory.appendingPathComponent("release")
        release = (try? String(contentsOf: releaseFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "unknown"
        guard try FileSystem.exists(image) else { throw GuestError.kernelMissing(searched: [directory.path]) }
        for module in Self.moduleLoadOrder where try !FileSystem.exists(modules.appendingPathComponent("\(module).ko")) {
            throw GuestError.kernelMissing(searched: ["\(directory.path) (modules/\(module).ko is missing)"])
        }
    }

    /// Directories searched: only `CLADE_KERNEL_DIR` when it is set (an explicit choice never
    /// falls back silently), else `<home>/kernel` then `/usr/local/lib/clade/kernel`.
    public static func searchPath(home: CladeHome, environment: [String: String] = ProcessInfo.processInfo.environment) -> [URL] {
        if let explicit = environment["CLADE_KERNEL_DIR"], !explicit.isEmpty { return [URL(fileURLWithPath: explicit)] }
        var candidates: [URL] = []
        candidates.append(home.kernel)
        candidates.append(URL(fileURLWithPath: "/usr/local/lib/clade/kernel"))
        return candidates
    }

    /// The first provisioned kernel on the search path, or an error naming the fix.
    public static func locate(home: CladeHome) throws -> GuestKernel {
        let candidates = searchPath(home: home)
        for candidate in candidates where try FileSystem.exists(candidate.appendingPathComponent("vmlinuz")) {
            return try GuestKernel(directory: candidate)
        }
        throw GuestError.kernelMissing(searched: candidates.map(\.path))
    }
}

/// Finds the `clade-agent` executable shipped into guests.
public enum AgentBinary {
    public static func locate(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> URL {
        var candidates: [URL] = []
        if let explicit = environment["CLADE_AGENT"], !explicit.isEmpty { candidates.append(URL(fileURLWithPath: explicit)) }
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        candidates.append(executable.deletingLastPathComponent().appendingPathComponent("clade-agent"))
        candidates.append(URL(fileURLWithPath: "/usr/local/lib/clade/clade-agent"))
        for candidate in candidates where FileManager.default.isExecutableFile(atPath: candidate.path) {
            return candidate
        }
        throw GuestError.agentMissing(searched: candidates.map(\.path))
    }
}
