#if canImport(Glibc)
import Glibc
#endif
import CladeModel
import CladeVMM
import Foundation

/// One protection as `clade doctor --json` reports it for the next VM this clade starts.
public struct ProtectionReport: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// Every new VM gets it.
        case on
        /// New VMs would lack it: those whose policy needs it are refused unless
        /// `--allow-weaker-isolation` is given.
        case missing
        /// Not given, and not something a policy requires of this clade yet.
        case off
    }
    public var state: State
    /// What the VMM gets, or why it cannot have it and the fix.
    public var reason: String
}

extension Engine {
    /// What every new VM's VMM gets, one entry per protection, and what clade refuses without.
    func confinementCheck() -> DoctorCheck {
        let plan = confinementPlan()
        let groups = controlGroups.hierarchy
        func gap(_ protection: Protection) -> String? { plan.gaps.first { $0.protection == protection }?.reason }
        var protections: [String: ProtectionReport] = [:]
        protections[Protection.seccomp.rawValue] = ProtectionReport(state: .on, reason: "-sandbox on,obsolete=deny,resourcecontrol=deny,spawn=deny in every VMM")
        protections[Protection.noSpawn.rawValue] = ProtectionReport(
            state: .on, reason: "the VMM's filter denies fork and exec: it is started detached, not daemonized, and gets state files as descriptors (migrate fd:)")
        let unprivileged = geteuid() != 0
        if unprivileged {
            protections[Protection.ownUID.rawValue] = ProtectionReport(
                state: .off, reason: "unprivileged: the VMM runs as your uid (\(geteuid())); a per-sandbox uid needs clade to run as root")
        } else {
            protections[Protection.ownUID.rawValue] = gap(.ownUID).map { ProtectionReport(state: .missing, reason: $0) }
                ?? ProtectionReport(state: .on, reason: "a uid of its own per sandbox, from \(JailIdentityPool.uidRange)")
        }
        protections[Protection.privateMountView.rawValue] = gap(.privateMountView).map { ProtectionReport(state: .missing, reason: $0) }
            ?? ProtectionReport(state: .on, reason: unprivileged
                ? "user, network and mount namespaces of its own; pivoted into a tmpfs root: /usr read-only, a few device nodes, its kernel, initrd and disk backing files read-only, its sandbox's directory"
                : "chrooted in a mount namespace of its own: /usr read-only, a few device nodes, its sandbox's directory")
        protections[Protection.hostUnreachable.rawValue] = gap(.hostUnreachable).map {
            ProtectionReport(state: .missing, reason: $0 + " (policy none still cuts every connection in the VMM)")
        } ?? ProtectionReport(state: .on, reason: unprivileged
            ? "a network namespace of its own: the guest's gateway reaches its empty loopback; iptables inside it refuses the host's addresses and enforces allow lists; slirp4netns (--disable-host-loopback) carries outbound traffic and the agent's port; policies none, outbound, allow"
            : "host firewall rules on the VMM's uid: guests cannot reach the host, nor ports it publishes by address translation; policies none, outbound, allow, deny; "
                + (egressProxyPort.map { "host names in allow lists through the egress proxy on 127.0.0.1:\($0)" }
                    ?? "host names in allow lists need a running `clade serve --egress-proxy-port PORT` (none runs for this store)"))
        if case .unavailable(let reason) = groups {
            protections[Protection.resourceLimits.rawValue] = ProtectionReport(state: .off, reason: "no resource limits: \(reason)")
        } else {
            var through = groups.name
            if unprivileged, case .unified(let delegated) = groups { through += " (delegated: \(delegated.path))" }
            if unprivileged, case .perController(_, let base) = groups { through += " (delegated: \(base))" }
            protections[Protection.resourceLimits.rawValue] = ProtectionReport(state: .on, reason: "CPU, memory and task limits through \(through)")
        }
        let detail = Protection.allCases.compactMap { protection in
            protections[protection.rawValue].map { "\(protection.rawValue) \($0.state.rawValue)" }
        }.joined(separator: ", ")
        var fix: String?
        if !plan.gaps.isEmpty {
            fix = "new sandboxes are refused unless --allow-weaker-isolation is given: " + plan.gaps.map(\.description).joined(separator: "; ")
        }
        return DoctorCheck(
            name: "confinement", status: plan.gaps.isEmpty ? .ok : .warning, detail: detail, fix: fix, protections: protections)
    }

    /// Sandboxes that run (or wait on standby) with weaker isolation than their policy needs:
    /// opted out explicitly, or started by a clade older than the refusal.
    func weakerIsolationCheck() async -> DoctorCheck {
        let records: [SandboxRecord]
        do {
            records = try await sandboxes.list()
        } catch {
            return DoctorCheck(name: "weaker isolation", status: .warning, detail: "cannot list sandboxes: \(error)", fix: "see the catalog check")
        }
        let weaker = records.compactMap { record -> String? in
            guard record.state == .running || record.state == .standby || record.state == .paused else { return nil }
            let gaps = record.confinement?.gaps(network: record.network ?? .standard) ?? ["no confinement recorded"]
            return gaps.isEmpty ? nil : "\(record.id) (\(record.confinement?.weakerIsolation == nil ? "started before clade refused" : "opted out"): \(gaps.joined(separator: "; ")))"
        }
        guard !weaker.isEmpty else { return DoctorCheck(name: "weaker isolation", status: .ok, detail: "no sandbox runs with weaker isolation") }
        return DoctorCheck(
            name: "weaker isolation", status: .warning, detail: "\(weaker.count) sandbox(es) run with weaker isolation: " + weaker.joined(separator: "; "),
            fix: "kill them (clade kill ID) and start them again on a host that confines them")
    }
}
