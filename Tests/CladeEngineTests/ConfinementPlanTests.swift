@testable import CladeEngine
import CladeModel
import Foundation
import Testing

/// The rules that decide whether a sandbox may start: what each host configuration gives a VMM,
/// and that a missing protection is refused, never silently dropped.
@Suite struct ConfinementPlanTests {
    typealias Facts = ConfinementPlan.HostFacts

    static let rootPublic = Facts(root: true, unsearchableAncestor: nil, packetFilter: true, mountNamespace: true)
    static let rootPrivate = Facts(root: true, unsearchableAncestor: "/root", packetFilter: true, mountNamespace: true)

    @Test func rootGetsEverythingWhereverItsStoreLives() {
        for facts in [Self.rootPublic, Self.rootPrivate] {
            let plan = ConfinementPlan(facts)
            #expect(plan.identity && plan.firewall && plan.mountView && !plan.namespaces, "\(facts)")
            #expect(plan.gaps.isEmpty, "\(plan.gaps)")
        }
    }

    @Test func aPrivateStoreWithoutAMountNamespaceLosesTheUidAndTheFirewallAndSaysWhy() {
        let plan = ConfinementPlan(Facts(root: true, unsearchableAncestor: "/root", packetFilter: true, mountNamespace: false))
        #expect(!plan.identity && !plan.firewall && !plan.mountView)
        #expect(Set(plan.gaps.map(\.protection)) == [.ownUID, .privateMountView, .hostUnreachable])
        #expect(plan.gaps.first { $0.protection == .ownUID }?.reason.contains("chmod o+x /root") == true)
    }

    @Test func rootWithoutIptablesCannotKeepTheHostUnreachable() {
        let plan = ConfinementPlan(Facts(root: true, unsearchableAncestor: nil, packetFilter: false, mountNamespace: true))
        #expect(plan.gaps.map(\.protection) == [.hostUnreachable])
        #expect(plan.gaps(for: .isolated).isEmpty, "policy none cuts every connection in the VMM itself")
        #expect(plan.gaps(for: .standard).map(\.protection) == [.hostUnreachable])
    }

    @Test func anUnprivilegedClade() {
        let confined = ConfinementPlan(Facts(root: false, unsearchableAncestor: nil, packetFilter: true, mountNamespace: false, userNamespace: true))
        #expect(confined.namespaces && confined.mountView && !confined.identity && !confined.firewall)
        #expect(confined.allowLists, "iptables in the VMM's own namespace enforces allow lists")
        #expect(confined.gaps.isEmpty, "user, network and mount namespaces and their packet filter cover what root's uid and firewall do")

        let noFilter = ConfinementPlan(Facts(root: false, unsearchableAncestor: nil, packetFilter: false, mountNamespace: false, userNamespace: true))
        #expect(noFilter.namespaces && !noFilter.allowLists)
        #expect(noFilter.gaps.map(\.protection) == [.hostUnreachable])
        #expect(noFilter.gaps(for: .isolated).isEmpty, "policy none cuts every connection in the VMM itself")

        let noNamespaces = ConfinementPlan(Facts(root: false, unsearchableAncestor: nil, packetFilter: false, mountNamespace: false, userNamespace: false))
        #expect(!noNamespaces.namespaces && !noNamespaces.mountView)
        #expect(Set(noNamespaces.gaps.map(\.protection)) == [.privateMountView, .hostUnreachable])

        let noHelper = ConfinementPlan(Facts(
            root: false, unsearchableAncestor: nil, packetFilter: false, mountNamespace: false, userNamespace: true,
            userNetworkProblem: "slirp4netns is not installed (apt-get install slirp4netns)"))
        #expect(!noHelper.namespaces)
        #expect(noHelper.gaps.contains { $0.protection == .hostUnreachable && $0.reason.contains("apt-get install slirp4netns") })
    }

    @Test func theRefusalNamesWhatIsMissingAndTheOptOut() {
        let plan = ConfinementPlan(Facts(root: false, unsearchableAncestor: nil, packetFilter: false, mountNamespace: false))
        let error = ConfinementPlan.refusal(plan.gaps(for: .standard), policy: .standard)
        #expect(error.category == .unsupported)
        let message = "\(error)"
        #expect(message.contains("host_unreachable") && message.contains("private_mount_view"))
        #expect(message.contains("--allow-weaker-isolation"))
    }

    @Test func recordsTellTheirGapsEvenFromBeforeTheRefusal() {
        // A sandbox an older clade started unconfined records no opt-out; its gaps come from its fields.
        let legacy = SandboxConfinement(seccomp: true, hostFirewall: false)
        #expect(legacy.gaps(network: .standard).count == 3)
        #expect(legacy.gaps(network: .isolated).count == 2)
        let full = SandboxConfinement(uid: 2_200_000_001, gid: 2_200_000_001, seccomp: true, hostFirewall: true, privateMountView: true)
        #expect(full.gaps(network: .standard).isEmpty)
        let unprivileged = SandboxConfinement(
            seccomp: true, hostFirewall: false, privateMountView: true, namespaces: SandboxConfinement.unprivilegedNamespaces)
        #expect(unprivileged.gaps(network: .standard).isEmpty)
        let optedOut = SandboxConfinement(seccomp: true, hostFirewall: false, weakerIsolation: ["host_unreachable: not root"])
        #expect(optedOut.gaps(network: .standard) == ["host_unreachable: not root"])
    }

    @Test func anOldRecordStillDecodes() throws {
        let old = #"{"seccomp": true, "host_firewall": false, "uid": 5, "gid": 5}"#
        let decoded = try JSONDecoder().decode(SandboxConfinement.self, from: Data(old.utf8))
        #expect(decoded.weakerIsolation == nil && decoded.namespaces == nil && decoded.uid == 5)
    }
}
