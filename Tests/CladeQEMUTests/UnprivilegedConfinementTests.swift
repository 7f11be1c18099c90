#if canImport(Glibc)
import Glibc
#endif
import CladeModel
@testable import CladeVMM
import Foundation
import Testing

/// The pure parts of an unprivileged clade's confinement: which delegated cgroup subtree it
/// uses, and the rules its VMM's network namespace gets.
struct UnprivilegedConfinementTests {
    /// A fake cgroup tree owned by this test's user: `root/<delegated>/<own>`.
    func tree(_ delegated: String, _ own: String) throws -> URL {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("cgroups-\(UUID().uuidString)")
        let group = root.appendingPathComponent(delegated)
        try FileManager.default.createDirectory(at: group.appendingPathComponent(own), withIntermediateDirectories: true)
        for file in ["cgroup.procs", "cgroup.subtree_control"] {
            _ = FileManager.default.createFile(atPath: group.appendingPathComponent(file).path, contents: nil)
        }
        _ = FileManager.default.createFile(atPath: group.appendingPathComponent("cgroup.controllers").path, contents: Data("cpuset cpu io memory pids\n".utf8))
        return root
    }

    @Test func aDelegatedSubtreeAboveCladesOwnGroupIsUsed() throws {
        let root = try tree("delegated", "session")
        defer { try? FileManager.default.removeItem(at: root) }
        let found = ControlGroups.delegatedSubtree(root: root, ownCgroup: "/delegated/session", uid: geteuid())
        #expect(found == .unified(root.appendingPathComponent("delegated")))
        #expect(ControlGroups.unifiedPath(inProcCgroup: "0::/delegated/session\n") == "/delegated/session")
    }

    @Test func noDelegationOrCladeInsideItsDelegatedGroupIsRefusedWithTheFix() throws {
        let root = try tree("delegated", "session")
        defer { try? FileManager.default.removeItem(at: root) }
        guard case .unavailable(let inside) = ControlGroups.delegatedSubtree(root: root, ownCgroup: "/delegated", uid: geteuid()) else {
            Issue.record("clade running in its delegated group itself cannot hand controllers down")
            return
        }
        #expect(inside.contains("run clade in a group below it"))
        guard case .unavailable(let foreign) = ControlGroups.delegatedSubtree(root: root, ownCgroup: "/delegated/session", uid: geteuid() + 1) else {
            Issue.record("a tree owned by someone else is not delegated")
            return
        }
        #expect(foreign.contains("Delegate=yes"))
        try Data("cpu\n".utf8).write(to: root.appendingPathComponent("delegated/cgroup.controllers"))
        guard case .unavailable(let lacking) = ControlGroups.delegatedSubtree(root: root, ownCgroup: "/delegated/session", uid: geteuid()) else {
            Issue.record("a delegated group without the memory and pids controllers cannot limit a VMM")
            return
        }
        #expect(lacking.contains("memory, pids"))
    }

    @Test func theNamespaceRulesRefuseTheHostAndEnforceAnAllowList() throws {
        let allow = try NetworkPolicy(parsing: "allow:10.231.7.2/32:8001")
        let rules = NamespaceFirewall.rules(for: allow, hostAddresses: ["192.0.2.2", "2001:db8::2"], helperNetwork: "10.41.0.0/24", ipv6: false)
        let lines = rules.split(separator: "\n").map(String.init)
        // Replies to the host's connections in first, then the host refused, then the list, then nothing.
        let reply = try #require(lines.firstIndex { $0.contains("ESTABLISHED") })
        let host = try #require(lines.firstIndex { $0.contains("-d 192.0.2.2") })
        let listed = try #require(lines.firstIndex { $0 == "-A OUTPUT -d 10.231.7.2/32 -p tcp --dport 8001 -j ACCEPT" })
        let rest = try #require(lines.lastIndex { $0 == "-A OUTPUT -j REJECT" })
        #expect(reply < host && host < listed && listed < rest)
        #expect(lines.contains { $0.contains("-d 10.41.0.0/24") } && lines.contains { $0.contains("-d 169.254.0.0/16") })
        #expect(!lines.contains { $0.contains("2001:db8") }, "an IPv6 address in IPv4 rules")

        let outbound = NamespaceFirewall.rules(for: .standard, hostAddresses: ["2001:db8::2"], helperNetwork: "10.41.0.0/24", ipv6: true)
        #expect(outbound.contains("-d 2001:db8::2") && outbound.contains("-d fe80::/10"))
        #expect(!outbound.contains("-A OUTPUT -j REJECT"), "outbound refuses only the host")
        #expect(NamespaceFirewall.rules(for: .isolated, hostAddresses: [], helperNetwork: "10.41.0.0/24", ipv6: false).contains("-A OUTPUT -j REJECT"))
    }
}
