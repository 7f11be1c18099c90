import CladeModel

/// The iptables rules that enforce a sandbox's ``NetworkPolicy`` in one chain, shared by root's
/// per-sandbox chain (``HostFirewall``) and an unprivileged VMM's own `OUTPUT` (``NamespaceFirewall``).
/// They hold only the policy; what no policy may reach (the host, link-local addresses) is refused
/// before them.
enum PolicyRules {
    /// The rules appended to `chain` for `policy`, where `pass` is the verdict of an admitted
    /// destination (`RETURN` in a chain called from another, `ACCEPT` in `OUTPUT` itself).
    /// Lists are IPv4 CIDRs: under IPv6 an allow list admits nothing, and a deny list refuses
    /// everything only when it denies all traffic.
    /// A policy that names hosts also admits `nameservers` (IPv4 addresses) on port 53, so the
    /// guest can look those names up (E2B admits its resolver, 8.8.8.8, the same way).
    static func rules(for policy: NetworkPolicy, chain: String, pass: String, ipv6: Bool, nameservers: [String] = []) -> [String] {
        var rules: [String] = []
        if !ipv6 {
            for destination in policy.allow { rules += match(destination, chain: chain, verdicts: ["-j \(pass)"]) }
            if policy.usesEgressProxy {
                for server in nameservers { rules += ["tcp", "udp"].map { "-A \(chain) -d \(server)/32 -p \($0) --dport 53 -j \(pass)" } }
            }
        }
        switch policy.mode {
        case .outbound:
            return []
        case .none, .allow:
            return rules + HostFirewall.refuse(chain: chain, match: "")
        case .deny:
            if ipv6 { return policy.deniesAllTraffic ? HostFirewall.refuse(chain: chain, match: "") : [] }
            for destination in policy.deny {
                rules += match(destination, chain: chain, verdicts: ["-j REJECT --reject-with tcp-reset", "-j REJECT"])
            }
            return rules
        }
    }

    /// `destination` as rules with each verdict: one rule per protocol when it names a port (a
    /// TCP reset only fits TCP, so a two-verdict refusal gives TCP the first and the rest the last).
    private static func match(_ destination: NetworkDestination, chain: String, verdicts: [String]) -> [String] {
        let prefix = "-A \(chain) -d \(destination.cidr)"
        guard let port = destination.port else {
            return verdicts.count == 1 ? ["\(prefix) \(verdicts[0])"] : ["\(prefix) -p tcp \(verdicts[0])", "\(prefix) \(verdicts[1])"]
        }
        return ["tcp", "udp"].map { proto in
            let verdict = verdicts.count == 1 || proto == "tcp" ? verdicts[0] : verdicts[1]
            return "\(prefix) -p \(proto) --dport \(port) \(verdict)"
        }
    }
}
