#if canImport(Glibc)
import Glibc
#endif
import CladeModel
import CladeStore
import CladeVMM
import Foundation

/// The jail every sandbox's VMM starts in: a seccomp filter always; as root, a uid of its own and
/// host firewall rules that keep the guest off the host and enforce its network policy.
extension Engine {
    var jailIdentities: JailIdentityPool { JailIdentityPool() }
    var firewall: HostFirewall { HostFirewall(logger: logger) }
    /// The host's control groups, as clade confines its VMMs in them.
    public var controlGroups: ControlGroups { ControlGroups(hierarchy: ControlGroups.detect()) }

    /// What confinement a new VM can get on this host, and why not where it cannot.
    package func confinementPlan() -> ConfinementPlan {
        let root = geteuid() == 0
        var networkProblem: String?
        if !root, case .failure(let problem) = MachineConfinement.userNetworkHelper { networkProblem = problem.description }
        return ConfinementPlan(ConfinementPlan.HostFacts(
            root: root, unsearchableAncestor: root ? unreachableAncestor(of: home.sandboxes) : nil,
            packetFilter: root ? HostFirewall.isAvailable : NamespaceFirewall.isAvailable, mountNamespace: root && MachineConfinement.mountViewAvailable,
            userNamespace: !root && MachineConfinement.userNamespaceAvailable, userNetworkProblem: networkProblem))
    }

    /// What ``requireIsolation(for:optedOut:)`` found: the host's plan and the gaps a sandbox
    /// started now has, so `confine` need not probe the host again.
    package struct IsolationCheck: Sendable {
        let policy: NetworkPolicy
        let plan: ConfinementPlan
        let gaps: [ConfinementPlan.Gap]
    }

    /// Refuses, before anything is made, a sandbox under `policy` that this host cannot isolate
    /// as the policy needs, unless weaker isolation was allowed for this engine or, for a sandbox
    /// being resumed, was recorded when it was first started. Returns the plan and the gaps to record.
    func requireIsolation(for policy: NetworkPolicy, optedOut recorded: SandboxConfinement? = nil) throws -> IsolationCheck {
        let plan = confinementPlan()
        if policy.mode == .allow || policy.mode == .deny, !plan.allowLists {
            throw EngineError.isolationUnavailable(
                "the network policy '\(policy)' is enforced by a packet filter (root's host firewall, or iptables in an unprivileged VMM's namespace), which this host cannot give a sandbox: "
                    + plan.gaps.map(\.description).joined(separator: "; ") + " (--allow-weaker-isolation cannot stand in for an allow or deny list)")
        }
        if policy.usesEgressProxy {
            guard plan.firewall else {
                throw EngineError.isolationUnavailable(
                    "the network policy '\(policy)' names hosts, which only root's host firewall can send to the egress proxy that reads each connection's host name; "
                        + "this host cannot give it: " + plan.gaps.map(\.description).joined(separator: "; ") + " (list addresses or CIDRs instead, or run clade as root)")
            }
            guard egressProxyPort != nil else {
                throw EngineError.isolationUnavailable(
                    "the network policy '\(policy)' names hosts, and only the egress proxy of `clade serve --egress-proxy-port PORT` can read the name a connection is for; "
                        + "this clade process runs none: start the sandbox through that daemon, or list addresses or CIDRs instead")
            }
        }
        let gaps = plan.gaps(for: policy)
        guard !gaps.isEmpty, !allowsWeakerIsolation, recorded?.weakerIsolation == nil else { return IsolationCheck(policy: policy, plan: plan, gaps: gaps) }
        throw ConfinementPlan.refusal(gaps, policy: policy)
    }

    /// Confines the VM about to start for `record` under `policy`: claims (or re-claims) its uid,
    /// installs its firewall rules, records the result in `record`, and returns the VMM's jail.
    /// Throws when the host cannot give what the policy needs and nobody opted out. `checked` is
    /// the caller's own ``requireIsolation(for:optedOut:)`` of the same policy, reused rather than
    /// probing the host once more per VM.
    func confine(
        _ record: inout SandboxRecord, policy: NetworkPolicy, limits request: LimitRequest? = nil, checked: IsolationCheck? = nil
    ) throws -> MachineConfinement {
        let check = try checked.flatMap { $0.policy == policy ? $0 : nil } ?? requireIsolation(for: policy, optedOut: record.confinement)
        let plan = check.plan, gaps = check.gaps
        let groups = controlGroups
        // A restart keeps what the sandbox had; a request replaces it; else the defaults.
        let limits = try request.map { try $0.resolve(guestMemoryMiB: record.memoryMiB) }
            ?? record.limits ?? SandboxLimits.defaults(guestMemoryMiB: record.memoryMiB)
        if case .unavailable(let reason) = groups.hierarchy, request != nil {
            throw EngineError.unsupported("resource limits need control groups, which this host does not give clade: \(reason) (see `clade doctor`)")
        }
        if !gaps.isEmpty {
            logger.warning("starting a sandbox with weaker isolation, as allowed", metadata: ["id": "\(record.id)", "lacks": "\(gaps.map(\.description))"])
        }
        var identity: JailIdentity?
        var replacing = true
        if plan.identity {
            let directory = sandboxCatalog.paths(record.id).directory
            if let uid = record.confinement?.uid, let gid = record.confinement?.gid {
                identity = JailIdentity(uid: uid, gid: gid)
                jailIdentities.reclaim(JailIdentity(uid: uid, gid: gid), for: directory)
                // The sandbox's own uid, held all along (standby keeps the claim): its rules are
                // the ones it installed for the recorded policy. Staying `outbound` needs none,
                // so the two `iptables -S` probes of a removal (~8 ms of a resume) are spared;
                // anything left over could only refuse more, never less.
                replacing = !(policy.mode == .outbound && !policy.usesEgressProxy && record.network == policy)
            } else {
                let claimed = try jailIdentities.claim(for: directory)
                identity = claimed.identity
                replacing = claimed.tookOver
            }
        }
        if let identity, plan.firewall {
            do {
                try firewall.apply(policy, uid: identity.uid, replacing: replacing, egressProxyPort: egressProxyPort)
            } catch {
                jailIdentities.release(identity)
                throw error
            }
        }
        record.network = policy
        var enforced: String?
        if case .unavailable = groups.hierarchy {
            record.limits = nil
        } else {
            record.limits = limits
            enforced = groups.hierarchy.name
        }
        let mountView = (identity != nil && plan.mountView) || plan.namespaces
        record.confinement = SandboxConfinement(
            uid: identity?.uid, gid: identity?.gid, seccomp: true, hostFirewall: identity != nil && plan.firewall, controlGroups: enforced,
            privateMountView: mountView, weakerIsolation: gaps.isEmpty ? nil : gaps.map(\.description),
            namespaces: plan.namespaces ? SandboxConfinement.unprivilegedNamespaces : nil)
        var machine = MachineConfinement(identity: identity, syscallFilter: true, noOutboundNetwork: policy.mode == .none)
        machine.privateMountView = mountView
        machine.userNamespace = plan.namespaces
        if plan.namespaces, plan.allowLists { machine.namespaceFirewall = policy }
        if enforced != nil { machine.controlGroup = (groups, record.id, limits) }
        return machine
    }

    /// Restores what a host reboot of the firewall or `/run` may have lost for a running sandbox
    /// (a restarted daemon calls this when it adopts one).
    func reapplyConfinement(_ record: SandboxRecord) {
        if record.confinement?.controlGroups != nil, let pid = record.pid, let limits = record.limits {
            do {
                try controlGroups.confine(pid: pid, sandbox: record.id, limits: limits)
            } catch {
                logger.error("cannot re-apply a sandbox's limits", metadata: ["id": "\(record.id)", "error": "\(error)"])
            }
        }
        guard let uid = record.confinement?.uid, let gid = record.confinement?.gid else { return }
        jailIdentities.reclaim(JailIdentity(uid: uid, gid: gid), for: sandboxCatalog.paths(record.id).directory)
        guard record.confinement?.hostFirewall == true else { return }
        do {
            try firewall.apply(record.network ?? .standard, uid: uid, replacing: true, egressProxyPort: egressProxyPort)
        } catch {
            logger.error("cannot re-apply a sandbox's firewall rules", metadata: ["id": "\(record.id)", "error": "\(error)"])
        }
    }

    /// Puts `policy` in force for the running VMM of `record`, in the packet filter that already
    /// confines it: root's chain for its uid, or the filter in its own network namespace.
    func changeNetwork(of record: SandboxRecord, to policy: NetworkPolicy) throws {
        let check = try requireIsolation(for: policy, optedOut: record.confinement)
        if record.confinement?.hostFirewall == true, let uid = record.confinement?.uid {
            try firewall.update(policy, uid: uid, egressProxyPort: egressProxyPort)
        } else if record.confinement?.namespaces != nil, check.plan.allowLists, let pid = record.pid {
            try NamespaceFirewall.apply(policy, toNamespaceOf: pid)
        } else if policy.mode != .outbound || policy.usesEgressProxy {
            throw EngineError.isolationUnavailable(
                "sandbox \(record.id) runs without a packet filter of its own, so the policy '\(policy)' cannot be put in force while it runs; "
                    + "start a new sandbox with that policy (clade fork --network)")
        }
    }

    /// The live sandbox of this store whose VMM runs as `uid` (the egress proxy's question for
    /// each connection it takes), found through the uid's claim without scanning every record.
    public func sandbox(runningAs uid: UInt32) -> SandboxRecord? {
        guard let directory = jailIdentities.owner(of: uid), directory.deletingLastPathComponent().standardizedFileURL == home.sandboxes.standardizedFileURL,
            let record = (try? sandboxCatalog.get(directory.lastPathComponent)) ?? nil, record.confinement?.uid == uid, record.state != .dead
        else { return nil }
        return record
    }

    /// Drops a sandbox's firewall rules, control group and uid claim (its VMM is gone).
    func releaseConfinement(_ confinement: SandboxConfinement?, sandbox id: String) {
        if confinement?.controlGroups != nil { controlGroups.remove(sandbox: id) }
        guard let uid = confinement?.uid, let gid = confinement?.gid else { return }
        if confinement?.hostFirewall == true { firewall.remove(uid: uid) }
        jailIdentities.release(JailIdentity(uid: uid, gid: gid))
    }

    /// Below this much free space in the store, boot, bake and fork refuse to start another VM
    /// (a guest's disk grows into the store): `CLADE_MIN_FREE_MIB`, default 512.
    static var freeSpaceFloorMiB: Int64 {
        ProcessInfo.processInfo.environment["CLADE_MIN_FREE_MIB"].flatMap { Int64($0) } ?? 512
    }

    /// Refuses to create another sandbox when the store's filesystem is nearly full.
    func requireFreeSpace() throws {
        let free = try FileSystem.freeBytes(at: home.root)
        let floor = Self.freeSpaceFloorMiB << 20
        guard free >= floor else {
            throw EngineError.unsupported("only \(free >> 20) MiB are free in \(home.root.path), below the \(floor >> 20) MiB floor; free space (clade rmi, clade gc) or lower CLADE_MIN_FREE_MIB")
        }
    }

    /// The first directory from the root down to `directory` that other users cannot search.
    private func unreachableAncestor(of directory: URL) -> String? {
        var path = ""
        for component in directory.standardizedFileURL.pathComponents.dropFirst() {
            path += "/" + component
            var info = stat()
            guard stat(path, &info) == 0 else { return nil }  // created later, with mode 0755
            if info.st_mode & S_IXOTH == 0 { return path }
        }
        return nil
    }
}
