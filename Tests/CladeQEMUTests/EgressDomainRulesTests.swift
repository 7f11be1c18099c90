import CladeModel
@testable import CladeVMM
import Foundation
import Testing

/// Host names in allow lists: how they parse and match, and the rules that send a sandbox's
/// HTTP and TLS connections to the egress proxy.
struct EgressDomainRulesTests {
    @Test func namesParseMatchAndPrintBack() throws {
        let policy = try NetworkPolicy(parsing: "deny:0.0.0.0/0;allow:192.0.2.7,PyPI.org.,*.pythonhosted.org")
        #expect(policy.domains.map(\.pattern) == ["pypi.org", "*.pythonhosted.org"] && policy.allow.count == 1 && policy.usesEgressProxy)
        #expect(policy.description == "deny:0.0.0.0/0;allow:192.0.2.7/32,pypi.org,*.pythonhosted.org")
        #expect(try NetworkPolicy(parsing: policy.description) == policy)
        #expect(try JSONDecoder().decode(NetworkPolicy.self, from: JSONEncoder().encode(policy)) == policy)
        #expect(try NetworkPolicy(parsing: "allow:example.com").domains.count == 1)
        // A wildcard admits every name below it, not the name itself; an exact name only itself.
        #expect(policy.admits(name: "PYPI.org") && policy.admits(name: "pypi.org.") && !policy.admits(name: "evilpypi.org"))
        #expect(policy.admits(name: "files.pythonhosted.org") && policy.admits(name: "a.b.pythonhosted.org"))
        #expect(!policy.admits(name: "pythonhosted.org") && !policy.admits(name: "pythonhosted.org.evil.com"))
        for bad in ["deny:0.0.0.0/0;allow:-bad.com", "deny:0.0.0.0/0;allow:a..b", "deny:0.0.0.0/0;allow:*", "deny:0.0.0.0/0;allow:*.",
                    "deny:0.0.0.0/0;allow:ex ample.com", "deny:0.0.0.0/0;allow:example.com:443", "deny:example.com"] {
            #expect(throws: (any Error).self, "\(bad)") { try NetworkPolicy(parsing: bad) }
        }
    }

    @Test func theAddressRulesDecideForUnnamedConnections() throws {
        func ip(_ text: String) -> UInt32 { text.split(separator: ".").reduce(UInt32(0)) { $0 << 8 | UInt32($1)! } }
        let denyAll = try NetworkPolicy(parsing: "deny:0.0.0.0/0;allow:192.0.2.0/24:443,example.com")
        #expect(denyAll.admits(address: ip("192.0.2.9"), port: 443) && !denyAll.admits(address: ip("192.0.2.9"), port: 80))
        #expect(!denyAll.admits(address: ip("198.51.100.1"), port: 443))
        let denySome = try NetworkPolicy(parsing: "deny:198.51.100.0/24;allow:example.com")
        #expect(denySome.admits(address: ip("203.0.113.5"), port: 80) && !denySome.admits(address: ip("198.51.100.77"), port: 80))
        #expect(NetworkPolicy.standard.admits(address: ip("203.0.113.5"), port: 80) && !NetworkPolicy.isolated.admits(address: ip("203.0.113.5"), port: 80))
    }

    @Test func namedPoliciesAdmitTheirResolversAndRedirectHTTPAndTLS() throws {
        let policy = try NetworkPolicy(parsing: "deny:0.0.0.0/0;allow:192.0.2.0/24:443,example.com")
        let filter = PolicyRules.rules(for: policy, chain: "C", pass: "RETURN", ipv6: false, nameservers: ["8.8.8.8"])
        let resolver = try #require(filter.firstIndex(of: "-A C -d 8.8.8.8/32 -p udp --dport 53 -j RETURN"))
        let refusal = try #require(filter.firstIndex { $0.contains("REJECT") })
        #expect(resolver < refusal)
        // Without names, no resolver is admitted.
        #expect(try !PolicyRules.rules(for: NetworkPolicy(parsing: "deny:0.0.0.0/0"), chain: "C", pass: "RETURN", ipv6: false, nameservers: ["8.8.8.8"])
            .contains { $0.contains("--dport 53") })

        let lines = HostFirewall.redirectRules(policy, uid: 200_007, port: 15480).split(separator: "\n").map(String.init)
        let local = try #require(lines.firstIndex(of: "-A CLADE-200007 -m addrtype --dst-type LOCAL -j RETURN"))
        let admitted = try #require(lines.firstIndex(of: "-A CLADE-200007 -d 192.0.2.0/24 -p tcp --dport 443 -j RETURN"))
        let redirect = try #require(lines.firstIndex(of: "-A CLADE-200007 -p tcp -m multiport --dports 80,443 -j REDIRECT --to-ports 15480"))
        #expect(local < redirect && admitted < redirect && lines.first == "*nat")
        #expect(lines.contains("-A OUTPUT -m owner --uid-owner 200007 -j CLADE-200007"))
        #expect(lines.contains("-I CLADE-VMM 2 -d 127.0.0.1/32 -p tcp --dport 15480 -m owner --uid-owner 200007 -m conntrack --ctstate DNAT -j ACCEPT"))
    }

    /// An `outbound` sandbox with header transforms refuses nothing, yet its HTTP and TLS still
    /// go to the proxy, which changes the requests to the transforms' hosts.
    @Test func transformsRedirectAnOutboundPolicyThatRefusesNothing() throws {
        let policy = NetworkPolicy(mode: .outbound, transforms: [try NetworkTransform(host: NetworkDomain(parsing: "api.example.com"), headers: ["X-A": "b"])])
        #expect(policy.usesEgressProxy)
        #expect(!PolicyRules.rules(for: policy, chain: "C", pass: "RETURN", ipv6: false, nameservers: ["8.8.8.8"]).contains { $0.contains("REJECT") })
        let lines = HostFirewall.redirectRules(policy, uid: 200_008, port: 15480).split(separator: "\n").map(String.init)
        #expect(lines.contains("-A CLADE-200008 -p tcp -m multiport --dports 80,443 -j REDIRECT --to-ports 15480"))
        #expect(NetworkPolicy(mode: .none, transforms: policy.transforms).transforms.isEmpty, "a sandbox with no network has nothing to change")
    }

    @Test func theHostsResolversAreReadButNotItsLoopbackOnes() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("resolv-\(UUID().uuidString)")
        try "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver\tfe80::1\noptions edns0\nnameserver 8.8.8.8\n".write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        #expect(HostFirewall.nameservers(resolvConf: file.path) == ["8.8.8.8", "10.0.0.2"])
    }
}
