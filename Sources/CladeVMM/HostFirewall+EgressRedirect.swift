import CladeModel
import CladeStore
import Foundation

/// The part of a sandbox's rules that sends its HTTP and TLS connections to the egress proxy
/// when its policy names hosts (IPv4 only: IPv6 follows the address rules).
///
/// A `nat` chain of the sandbox's own (`CLADE-<uid>`, hooked into `nat` `OUTPUT` for its uid)
/// redirects new TCP connections to ports 80 and 443 to the proxy, except those the address
/// rules already admit and those for the host or link-local addresses, which the filter goes on
/// refusing. The redirected connection reaches the host's loopback, which `CLADE-VMM` refuses, so
/// one rule ahead of that refusal admits exactly this uid's redirected connections to the
/// proxy's port. Without a proxy listening there, the connections are refused: names fail closed.
extension HostFirewall {
    /// The ports whose connections the proxy sees: HTTP (its `Host`) and TLS (its server name).
    public static let redirectedPorts = [80, 443]

    /// The `iptables-restore --noflush` input that installs the redirect for `uid` to `port`.
    static func redirectRules(_ policy: NetworkPolicy, uid: UInt32, port: Int) -> String {
        let own = sandboxChain(uid)
        var nat = ["*nat", ":\(own) - [0:0]", "-A \(own) -m addrtype --dst-type LOCAL -j RETURN", "-A \(own) -d 169.254.0.0/16 -j RETURN"]
        for destination in policy.allow {
            nat.append("-A \(own) -d \(destination.cidr) -p tcp" + (destination.port.map { " --dport \($0)" } ?? "") + " -j RETURN")
        }
        let ports = redirectedPorts.map(String.init).joined(separator: ",")
        nat += [
            "-A \(own) -p tcp -m multiport --dports \(ports) -j REDIRECT --to-ports \(port)",
            "-A OUTPUT " + hook(uid).joined(separator: " "), "COMMIT",
        ]
        let filter = ["*filter", "-I \(chain) 2 " + proxyAcceptance(uid: uid, port: port).joined(separator: " "), "COMMIT", ""]
        return (nat + filter).joined(separator: "\n")
    }

    /// The `CLADE-VMM` rule that admits `uid`'s redirected connections to the proxy.
    static func proxyAcceptance(uid: UInt32, port: Int) -> [String] {
        ["-d", "127.0.0.1/32", "-p", "tcp", "--dport", "\(port)", "-m", "owner", "--uid-owner", "\(uid)", "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"]
    }

    /// Installs the redirect when `policy` names hosts and a proxy listens on `port`; without a
    /// proxy the names meet the address rules alone, which refuse them. Call it holding the host lock.
    func redirectNames(of policy: NetworkPolicy, uid: UInt32, to port: Int?) throws {
        guard policy.usesEgressProxy, let port else { return }
        try restore("iptables", Self.redirectRules(policy, uid: uid, port: port))
    }

    /// Drops `uid`'s redirect, whatever port it named. Call it holding the host lock.
    func removeRedirect(uid: UInt32) {
        let own = Self.sandboxChain(uid)
        while (try? ExternalCommand("iptables", ["-w", "-t", "nat", "-D", "OUTPUT"] + Self.hook(uid)).run().status) == 0 {}
        _ = try? ExternalCommand("iptables", ["-w", "-t", "nat", "-F", own]).run()
        _ = try? ExternalCommand("iptables", ["-w", "-t", "nat", "-X", own]).run()
        // The acceptance names the port it was made for, so it is found by listing the chain.
        guard let listed = try? ExternalCommand("iptables", ["-w", "-S", Self.chain]).run(), listed.status == 0 else { return }
        for line in listed.stdout.split(separator: "\n") where line.contains("--uid-owner \(uid) ") && line.contains("DNAT") {
            let words = line.split(separator: " ").map(String.init)
            guard words.first == "-A" else { continue }
            _ = try? ExternalCommand("iptables", ["-w", "-D"] + words.dropFirst()).run()
        }
    }

    /// The resolvers a guest that names hosts may reach on port 53: E2B's default (8.8.8.8) and
    /// the host's own IPv4 nameservers, which user-mode networking forwards the guest's lookups to
    /// (a loopback resolver stays refused, like the rest of the host).
    static func nameservers(resolvConf: String = "/etc/resolv.conf") -> [String] {
        let text = (try? String(contentsOfFile: resolvConf, encoding: .utf8)) ?? ""
        var servers = ["8.8.8.8"]
        for line in text.split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard words.count >= 2, words[0] == "nameserver", let address = try? NetworkDestination(parsing: String(words[1])),
                address.prefixLength == 32, !address.address.hasPrefix("127."), !servers.contains(address.address)
            else { continue }
            servers.append(address.address)
        }
        return servers
    }
}
