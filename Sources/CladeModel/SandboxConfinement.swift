import Foundation

/// How a sandbox's hypervisor process was confined when it started, as `clade ls --json` shows it.
public struct SandboxConfinement: Codable, Sendable, Equatable {
    /// The uid and gid the VMM runs as; nil when it runs as clade's own user (only with an
    /// explicit `--allow-weaker-isolation`, or in records written before that existed).
    public var uid: UInt32?
    public var gid: UInt32?
    /// A seccomp filter is installed in the VMM.
    public var seccomp: Bool
    /// The host's packet filter refuses the guest's connections to the host itself.
    public var hostFirewall: Bool
    /// The control-group hierarchy enforcing ``SandboxRecord/limits`` (`cgroup v2`, `cgroup v1`),
    /// nil when limits are not enforced.
    public var controlGroups: String?
    /// The VMM runs chrooted in a mount namespace of its own that shows it only the system's
    /// programs and its sandbox's directory (nil in records written before this existed).
    public var privateMountView: Bool?
    /// The protections this sandbox runs without because its creator opted out with
    /// `--allow-weaker-isolation`, each as "protection: why it was not available". Nil when it
    /// got everything its network policy needs (or was created before clade refused to start
    /// without it: ``gaps(network:)`` tells for those).
    public var weakerIsolation: [String]?
    /// The namespaces of its own the VMM runs in (an unprivileged clade: `user`, `network`,
    /// `mount`); nil when it runs in the host's (root confines it with a uid and the firewall).
    public var namespaces: [String]?

    /// What an unprivileged clade gives every VMM.
    public static let unprivilegedNamespaces = ["user", "network", "mount"]

    public init(
        uid: UInt32? = nil, gid: UInt32? = nil, seccomp: Bool, hostFirewall: Bool, controlGroups: String? = nil, privateMountView: Bool? = nil,
        weakerIsolation: [String]? = nil, namespaces: [String]? = nil
    ) {
        self.uid = uid
        self.gid = gid
        self.seccomp = seccomp
        self.hostFirewall = hostFirewall
        self.controlGroups = controlGroups
        self.privateMountView = privateMountView
        self.weakerIsolation = weakerIsolation
        self.namespaces = namespaces
    }

    /// What this sandbox lacks of the isolation `network` needs, read from what was recorded: the
    /// opt-out's list when there is one, else derived from the fields (records of sandboxes
    /// started by an older clade, which started VMs without refusing).
    public func gaps(network: NetworkPolicy) -> [String] {
        if let weakerIsolation { return weakerIsolation }
        var gaps: [String] = []
        let ownNetwork = namespaces?.contains("network") == true
        if uid == nil, namespaces == nil { gaps.append("\(Protection.ownUID.rawValue): the VMM runs as clade's user") }
        if privateMountView != true { gaps.append("\(Protection.privateMountView.rawValue): the VMM sees the host's filesystem") }
        if network.mode != .none, !hostFirewall, !ownNetwork { gaps.append("\(Protection.hostUnreachable.rawValue): the guest can reach the host's loopback") }
        return gaps
    }

    enum CodingKeys: String, CodingKey {
        case uid, gid, seccomp
        case hostFirewall = "host_firewall"
        case controlGroups = "control_groups"
        case privateMountView = "private_mount_view"
        case weakerIsolation = "weaker_isolation"
        case namespaces
    }
}

/// One protection of a sandbox's VMM, by the name `clade doctor --json` and `clade ls --json` use.
public enum Protection: String, Codable, Sendable, CaseIterable {
    /// A seccomp filter in the VMM.
    case seccomp
    /// The VMM cannot start processes (seccomp's spawn group denied).
    case noSpawn = "no_spawn"
    /// A uid of the sandbox's own for the VMM (root), or the user's own uid inside a user namespace.
    case ownUID = "own_uid"
    /// The VMM sees only its own directory and the system's programs.
    case privateMountView = "private_mount_view"
    /// The guest cannot open connections to the host (its loopback or any of its addresses).
    case hostUnreachable = "host_unreachable"
    /// CPU, memory and task limits through control groups.
    case resourceLimits = "resource_limits"
}
