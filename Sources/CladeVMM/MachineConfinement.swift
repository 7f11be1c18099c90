#if canImport(Glibc)
import Glibc
#endif
import CladeModel
import CladeStore
import Foundation

/// The host-side jail of one hypervisor process, in no hypervisor's terms.
public struct MachineConfinement: Sendable, Equatable {
    /// Run as this uid and gid once the machine's files are open (root only: a per-sandbox
    /// identity, so one escaped VMM cannot signal, trace or read another).
    public var identity: JailIdentity?
    /// A system-call filter that forbids obsolete calls and resource control.
    public var syscallFilter: Bool
    /// Cut every connection the guest opens (hostfwd, i.e. the agent and published ports, still
    /// work): the `none` network policy where no firewall is available to say it.
    public var noOutboundNetwork: Bool
    /// Give the VMM a mount namespace of its own whose root holds only the system's programs and
    /// libraries (read-only), a few device nodes and the machine's own directory: an escaped VMM
    /// sees no other sandbox, no store, no `/etc`, `/home`, `/tmp` or host sockets (root only).
    public var privateMountView: Bool = false
    /// Unprivileged confinement: the VMM starts in a user namespace of its own (clade's user as
    /// root inside, nobody else mapped), a network namespace whose loopback is empty (so the
    /// guest's gateway reaches nothing of the host), and the private mount view, pivoted into
    /// before it starts. Outbound traffic and the agent's port go through a user-mode network
    /// helper (slirp4netns) attached to that namespace.
    public var userNamespace: Bool = false
    /// With ``userNamespace``: the policy ``NamespaceFirewall`` enforces inside the VMM's network
    /// namespace before its network helper attaches.
    public var namespaceFirewall: NetworkPolicy?
    /// The control group the VMM is moved into right after it starts, and its limits.
    public var controlGroup: (groups: ControlGroups, name: String, limits: SandboxLimits)?

    public init(identity: JailIdentity? = nil, syscallFilter: Bool, noOutboundNetwork: Bool = false) {
        self.identity = identity
        self.syscallFilter = syscallFilter
        self.noOutboundNetwork = noOutboundNetwork
    }

    public static func == (lhs: MachineConfinement, rhs: MachineConfinement) -> Bool {
        lhs.identity == rhs.identity && lhs.syscallFilter == rhs.syscallFilter && lhs.noOutboundNetwork == rhs.noOutboundNetwork
            && lhs.privateMountView == rhs.privateMountView && lhs.userNamespace == rhs.userNamespace
            && lhs.namespaceFirewall == rhs.namespaceFirewall
            && lhs.controlGroup?.name == rhs.controlGroup?.name && lhs.controlGroup?.limits == rhs.controlGroup?.limits
    }

    /// Whether this host can give a VMM a private mount view: clade is root and a mount
    /// namespace with a tmpfs in it can be made (a container without CAP_SYS_ADMIN cannot).
    /// Probed once per process, in a forked child (no helper program).
    public static var mountViewAvailable: Bool { mountViewProbe }

    private static let mountViewProbe: Bool = DetachedLauncher.mountViewPossible

    /// Whether this host lets an unprivileged clade make a VMM's user, network and mount
    /// namespaces. Probed once per process, in a forked child.
    public static var userNamespaceAvailable: Bool { userNamespaceProbe }

    private static let userNamespaceProbe: Bool = DetachedLauncher.userNamespacePossible

    /// The user-mode network helper an unprivileged jail needs, or why it cannot be used.
    public static var userNetworkHelper: Result<URL, ConfinementUnavailable> {
        guard let helper = ExternalCommand.locate("slirp4netns") else {
            return .failure(ConfinementUnavailable("slirp4netns is not installed (apt-get install slirp4netns)"))
        }
        guard access("/dev/net/tun", R_OK | W_OK) == 0 else {
            return .failure(ConfinementUnavailable("/dev/net/tun is not usable by \(ProcessInfo.processInfo.userName) (chmod 0666 /dev/net/tun, as Debian ships it)"))
        }
        return .success(helper)
    }

    /// Nothing: how machines ran before confinement existed (tests of the command line).
    public static let none = MachineConfinement(syscallFilter: false)
}

/// A uid and gid that belong to one sandbox's hypervisor process alone.
public struct JailIdentity: Sendable, Equatable, Codable {
    public var uid: UInt32
    public var gid: UInt32

    public init(uid: UInt32, gid: UInt32) {
        self.uid = uid
        self.gid = gid
    }
}

/// Why a protection cannot be had on this host, with the fix.
public struct ConfinementUnavailable: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
