import CladeModel
import Foundation

/// What this host lets clade give a new VMM, and, for each protection it cannot give, why and
/// how to fix that. Pure: built from the facts ``Engine/confinementPlan()`` probes, so the rules
/// that decide whether a sandbox may start are testable without root or a VM.
package struct ConfinementPlan: Sendable, Equatable {
    /// The facts the plan is made from.
    package struct HostFacts: Sendable, Equatable {
        /// clade runs as root.
        package var root: Bool
        /// The first directory above the store that other users cannot search, if any.
        package var unsearchableAncestor: String?
        /// iptables and ip6tables are installed (unprivileged: with `nsenter`, to run them in
        /// the VMM's namespace).
        package var packetFilter: Bool
        /// A mount namespace with a tmpfs in it can be made.
        package var mountNamespace: Bool
        /// Unprivileged: a user namespace with network and mount namespaces in it can be made.
        package var userNamespace: Bool
        /// Unprivileged: why the user-mode network helper cannot be used, nil when it can.
        package var userNetworkProblem: String?

        package init(
            root: Bool, unsearchableAncestor: String?, packetFilter: Bool, mountNamespace: Bool, userNamespace: Bool = false,
            userNetworkProblem: String? = nil
        ) {
            self.root = root
            self.unsearchableAncestor = unsearchableAncestor
            self.packetFilter = packetFilter
            self.mountNamespace = mountNamespace
            self.userNamespace = userNamespace
            self.userNetworkProblem = userNetworkProblem
        }
    }

    /// A protection the host cannot give, with why and the fix.
    package struct Gap: Sendable, Equatable, CustomStringConvertible {
        package var protection: Protection
        package var reason: String
        package var description: String { "\(protection.rawValue): \(reason)" }
    }

    /// The VMM drops to a uid of its own.
    package var identity: Bool
    /// Firewall rules keyed on that uid keep the guest off the host.
    package var firewall: Bool
    /// The VMM runs chrooted in a mount namespace of its own.
    package var mountView: Bool
    /// Unprivileged: the VMM runs in user, network and mount namespaces of its own, as the user.
    package var namespaces: Bool
    /// An allow-list policy can be enforced: root's host firewall, or the packet filter inside an
    /// unprivileged VMM's network namespace.
    package var allowLists: Bool
    /// Why each protection that is not given is not, with its fix.
    package var gaps: [Gap]

    package init(_ facts: HostFacts) {
        var gaps: [Gap] = []
        namespaces = !facts.root && facts.userNamespace && facts.userNetworkProblem == nil
        mountView = (facts.root && facts.mountNamespace) || namespaces
        // Inside its mount view the VMM reaches its directory through the jail's own 0755
        // directories, so where the store lives matters only without one.
        let blockedBy = mountView ? nil : facts.unsearchableAncestor
        identity = facts.root && blockedBy == nil
        firewall = identity && facts.packetFilter
        allowLists = firewall || (namespaces && facts.packetFilter)
        if !facts.root {
            // Unprivileged, the VMM runs as the user: a uid of its own is not possible, and not
            // what the namespaces rely on.
            if !facts.userNamespace {
                let why = "this host does not let an unprivileged user make user namespaces (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone, or AppArmor's restrict_unprivileged_userns), or run clade as root"
                gaps.append(Gap(protection: .privateMountView, reason: "the VMM would see your whole filesystem: " + why))
                gaps.append(Gap(protection: .hostUnreachable, reason: "the guest could reach the host's loopback: " + why))
            } else if let problem = facts.userNetworkProblem {
                gaps.append(Gap(protection: .hostUnreachable, reason: "the VMM's network namespace needs slirp4netns for the agent and outbound traffic: \(problem)"))
                gaps.append(Gap(protection: .privateMountView, reason: "it comes with that namespace (see host_unreachable)"))
            } else if !facts.packetFilter {
                gaps.append(Gap(
                    protection: .hostUnreachable,
                    reason: "iptables, ip6tables or nsenter not found, so nothing keeps the guest off the host's own addresses from inside the VMM's namespace (apt-get install iptables util-linux)"))
            }
        } else {
            if let blockedBy {
                gaps.append(Gap(
                    protection: .ownUID,
                    reason: "\(blockedBy) is not searchable by other users and no mount namespace can be made, so the VMM cannot run as a uid of its own (chmod o+x \(blockedBy), or use a --home under /var/lib)"))
            }
            if !mountView {
                gaps.append(Gap(
                    protection: .privateMountView,
                    reason: "no mount namespace can be made (no CAP_SYS_ADMIN, as in an unprivileged container), so the VMM would see the host's whole filesystem (run clade with CAP_SYS_ADMIN)"))
            }
            if !facts.packetFilter {
                gaps.append(Gap(protection: .hostUnreachable, reason: "iptables/ip6tables not found, so nothing keeps the guest off the host's loopback (apt-get install iptables)"))
            } else if !identity {
                gaps.append(Gap(protection: .hostUnreachable, reason: "the firewall rules need the VMM's own uid, which it cannot have (see own_uid)"))
            }
        }
        self.gaps = gaps
    }

    /// The gaps that matter to a sandbox under `policy`: a uid and a mount view always; the host
    /// firewall unless the policy cuts every connection (`none` does that in the VMM itself).
    package func gaps(for policy: NetworkPolicy) -> [Gap] {
        gaps.filter { $0.protection != .hostUnreachable || policy.mode != .none }
    }

    /// The refusal for a sandbox under `policy` that would lack `gaps`.
    package static func refusal(_ gaps: [Gap], policy: NetworkPolicy) -> EngineError {
        .isolationUnavailable(
            "refusing to start a sandbox without the isolation its network policy '\(policy)' needs: "
                + gaps.map(\.description).joined(separator: "; ")
                + ". Fix that, or pass --allow-weaker-isolation (per command, or to `clade serve` for its sandboxes) to start it anyway; the opt-out is recorded in the sandbox and shown by `clade ls` and `clade doctor`")
    }
}
