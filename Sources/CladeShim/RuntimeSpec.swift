import CladeGuestProtocol
import Foundation

/// The parts of an OCI runtime spec (`config.json`, runtime-spec 1.0) the shim acts on.
/// Unknown fields are ignored, as the spec allows.
public struct RuntimeSpec: Decodable, Sendable {
    public var process: RuntimeProcess?
    public var root: Root?
    public var annotations: [String: String]?
    public var linux: Linux?
    public var hostname: String?
    public var mounts: [Mount]?

    public struct Root: Decodable, Sendable {
        public var path: String?
    }

    public struct Linux: Decodable, Sendable {
        public var resources: RuntimeResources?
        public var namespaces: [Namespace]?
    }

    /// A namespace the container joins (`path`) or gets anew (no path).
    public struct Namespace: Decodable, Sendable {
        public var type: String
        public var path: String?
    }

    public struct Mount: Decodable, Sendable {
        public var destination: String
        public var source: String?
    }

    /// The network namespace the container joins: under the CRI, the pod's, made by CNI.
    var networkNamespacePath: String? {
        linux?.namespaces?.first { $0.type == "network" }?.path.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The host file bound at `destination` (the CRI binds a pod's `/etc/resolv.conf`).
    func mountSource(for destination: String) -> String? {
        mounts?.first { $0.destination == destination }?.source
    }

    /// Reads `<bundle>/config.json`.
    public static func load(bundle: String) throws -> RuntimeSpec {
        let path = URL(fileURLWithPath: bundle).appendingPathComponent("config.json")
        let data: Data
        do {
            data = try Data(contentsOf: path)
        } catch {
            throw TTRPCError.status(.invalidArgument, "the bundle has no readable config.json at \(path.path): \(error.localizedDescription)")
        }
        do {
            return try JSONDecoder().decode(RuntimeSpec.self, from: data)
        } catch {
            throw TTRPCError.status(.invalidArgument, "\(path.path) is not an OCI runtime spec clade can read: \(error)")
        }
    }
}

/// A process as the runtime spec describes it: the container's own, or an exec's (containerd
/// sends an exec's as JSON in `ExecProcessRequest.spec`).
public struct RuntimeProcess: Decodable, Sendable {
    public var terminal: Bool?
    public var consoleSize: ConsoleSize?
    public var user: User?
    public var args: [String]?
    public var env: [String]?
    public var cwd: String?
    /// `RLIMIT_*` limits, each with `type`, `soft` and `hard`, as the agent takes them.
    public var rlimits: [ResourceLimit]?

    public struct ConsoleSize: Decodable, Sendable {
        public var height: UInt16
        public var width: UInt16
    }

    public struct User: Decodable, Sendable {
        public var uid: UInt32?
        public var gid: UInt32?
        public var username: String?
    }

    /// The user as the guest agent names one: a name, or `uid:gid`.
    var agentUser: String? {
        guard let user else { return nil }
        if let name = user.username, !name.isEmpty { return name }
        guard let uid = user.uid else { return nil }
        return "\(uid):\(user.gid ?? uid)"
    }

    /// `KEY=value` entries as a dictionary; a later entry wins, as execve's callers expect.
    var environment: [String: String] {
        var result: [String: String] = [:]
        for entry in env ?? [] {
            guard let equals = entry.firstIndex(of: "=") else { continue }
            result[String(entry[..<equals])] = String(entry[entry.index(after: equals)...])
        }
        return result
    }
}

/// `linux.resources`: what the shim maps onto the VM (memory size, vCPUs).
public struct RuntimeResources: Decodable, Sendable {
    public var memory: Memory?
    public var cpu: CPU?

    public struct Memory: Decodable, Sendable {
        public var limit: Int64?
    }

    public struct CPU: Decodable, Sendable {
        public var quota: Int64?
        public var period: UInt64?
    }

    /// MiB of guest memory for a memory limit, when one is set.
    var memoryMiB: Int? {
        guard let limit = memory?.limit, limit > 0 else { return nil }
        return Int(limit >> 20)
    }

    /// The CPU quota as a number of cores (1.5 for 150 ms per 100 ms), when one is set.
    var cpuCores: Double? {
        guard let quota = cpu?.quota, quota > 0, let period = cpu?.period, period > 0 else { return nil }
        return Double(quota) / Double(period)
    }

    /// vCPUs for a CPU quota (rounded up), when one is set.
    var cpus: Int? {
        guard let quota = cpu?.quota, quota > 0, let period = cpu?.period, period > 0 else { return nil }
        return Int((UInt64(quota) + period - 1) / period)
    }
}
