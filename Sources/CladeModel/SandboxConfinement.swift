import Foundation

/// How a sandbox's hypervisor process was confined when it started, as `clade ls --json` shows it.
public struct SandboxConfinement: Codable, Sendable, Equatable {
    /// The uid and gid the VMM runs as; nil when it runs as clade's own user (clade is not root,
    /// or the store is not reachable by other users).
    public var uid: UInt32?
    public var gid: UInt32?
    /// A seccomp filter is installed in the VMM.
    public var seccomp: Bool
    /// The host's packet filter refuses the guest's connections to the host itself; false when
    /// clade runs unprivileged (see `clade doctor`).
    public var hostFirewall: Bool
    /// The control-group hierarchy enforcing ``SandboxRecord/limits`` (`cgroup v2`, `cgroup v1`),
    /// nil when limits are not enforced.
    public var controlGroups: String?
    /// The VMM runs chrooted in a mount namespace of its own that shows it only the system's
    /// programs and its sandbox's directory (nil in records written before this existed).
    public var privateMountView: Bool?

    public init(uid: UInt32? = nil, gid: UInt32? = nil, seccomp: Bool, hostFirewall: Bool, controlGroups: String? = nil, privateMountView: Bool? = nil) {
        self.uid = uid
        self.gid = gid
        self.seccomp = seccomp
        self.hostFirewall = hostFirewall
        self.controlGroups = controlGroups
        self.privateMountView = privateMountView
    }

    enum CodingKeys: String, CodingKey {
        case uid, gid, seccomp
        case hostFirewall = "host_firewall"
        case controlGroups = "control_groups"
        case privateMountView = "private_mount_view"
    }
}
