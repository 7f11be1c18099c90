import CladeModel
@testable import CladeVMM
import Foundation
import Testing

/// Deny lists (E2B's `denyOut` with `allowOut` exceptions) as policies and as packet-filter rules.
struct EgressPolicyRulesTests {
    @Test func denyListsParseAndPrintBack() throws {
        let policy = try NetworkPolicy(parsing: "deny:0.0.0.0/0;allow:192.0.2.7,198.51.100.0/24:443")
        #expect(policy.mode == .deny && policy.deny == [.everywhere] && policy.allow.count == 2 && policy.deniesAllTraffic)
        #expect(policy.description == "deny:0.0.0.0/0;allow:192.0.2.7/32,198.51.100.0/24:443")
        #expect(try NetworkPolicy(parsing: policy.description) == policy)
        let decoded = try JSONDecoder().decode(NetworkPolicy.self, from: JSONEncoder().encode(policy))
        #expect(decoded == policy)
        #expect(try !NetworkPolicy(parsing: "deny:8.8.8.8").deniesAllTraffic)
        for bad in ["deny:", "deny:8.8.8.8;", "deny:8.8.8.8;deny:1.1.1.1", "deny:8.8.8.8;allow:", "deny:example.com", "allow:1.1.1.1;deny:8.8.8.8"] {
            #expect(throws: (any Error).self, "\(bad)") { try NetworkPolicy(parsing: bad) }
        }
        // A record naming the deny mode without its list is damaged, not a policy that denies nothing.
        #expect(throws: (any Error).self) { try JSONDecoder().decode(NetworkPolicy.self, from: Data(#"{"mode":"deny"}"#.utf8)) }
    }

    @Test func allowEntriesComeBeforeTheDeniesTheyExcept() throws {
        let policy = try NetworkPolicy(parsing: "deny:0.0.0.0/0;allow:192.0.2.7")
        let lines = PolicyRules.rules(for: policy, chain: "C", pass: "RETURN", ipv6: false)
        #expect(lines == [
            "-A C -d 192.0.2.7/32 -j RETURN",
            "-A C -d 0.0.0.0/0 -p tcp -j REJECT --reject-with tcp-reset",
            "-A C -d 0.0.0.0/0 -j REJECT",
        ])
        // Denying all traffic refuses IPv6 too; denying some IPv4 addresses leaves IPv6 as it was.
        #expect(PolicyRules.rules(for: policy, chain: "C", pass: "RETURN", ipv6: true).contains("-A C -j REJECT"))
        #expect(try PolicyRules.rules(for: NetworkPolicy(parsing: "deny:8.8.8.8:53"), chain: "C", pass: "RETURN", ipv6: true).isEmpty)
        #expect(try PolicyRules.rules(for: NetworkPolicy(parsing: "deny:8.8.8.8:53"), chain: "C", pass: "RETURN", ipv6: false) == [
            "-A C -d 8.8.8.8/32 -p tcp --dport 53 -j REJECT --reject-with tcp-reset",
            "-A C -d 8.8.8.8/32 -p udp --dport 53 -j REJECT",
        ])
    }

    @Test func theNamespaceRulesRefuseTheHostBeforeAnyException() throws {
        let policy = try NetworkPolicy(parsing: "deny:8.8.8.8;allow:192.0.2.2")
        let lines = NamespaceFirewall.rules(for: policy, hostAddresses: ["192.0.2.2"], helperNetwork: NamespaceFirewall.helperNetwork, ipv6: false)
            .split(separator: "\n").map(String.init)
        // An allow entry naming the host's own address must not open the host.
        let host = try #require(lines.firstIndex { $0.hasPrefix("-A OUTPUT -d 192.0.2.2 ") && $0.contains("REJECT") })
        let exception = try #require(lines.firstIndex { $0 == "-A OUTPUT -d 192.0.2.2/32 -j ACCEPT" })
        let denied = try #require(lines.firstIndex { $0.hasPrefix("-A OUTPUT -d 8.8.8.8/32") })
        #expect(host < exception && exception < denied)
        #expect(!lines.contains("-A OUTPUT -j REJECT"), "a deny list refuses only what it lists")
    }
}
