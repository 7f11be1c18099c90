#if canImport(Glibc)
import Glibc
#endif
import CladeModel
import CladeStore
import Foundation

/// The packet filter of an unprivileged VMM's own network namespace, where that VMM's user is
/// root and may install rules; root's ``HostFirewall`` keys its rules on per-VMM uids, which an
/// unprivileged clade cannot have.
///
/// Every guest connection is a socket of the VMM inside the namespace, and leaves it only
/// through the user-mode network helper, so rules on the namespace's `OUTPUT` see all of them:
/// 1. the namespace's own loopback and replies on connections opened to the guest (the agent,
///    forwarded ports) pass;
/// 2. the host's own addresses (whatever the helper would carry there), link-local addresses and
///    the helper's network (its gateway and resolver are the host) are refused;
/// 3. under an allow-list, the listed destinations pass and everything else is refused; under a
///    deny list, the listed destinations are refused unless an allow entry admits them.
///
/// `iptables-restore` replaces the whole table in one commit, so a policy changed while the VMM
/// runs (``apply(_:toNamespaceOf:)`` again) never leaves it unfiltered.
/// The rules go in before the helper attaches, so no packet leaves the namespace unfiltered.
public enum NamespaceFirewall {
    /// The network the user-mode helper (slirp4netns) gives the namespace, apart from the guest's
    /// 10.0.2.0/24: its gateway and resolver are the host, so the filter refuses it.
    public static let helperNetwork = "10.41.0.0/24"

    /// True when the rules can be installed: `nsenter` and the iptables restore tools exist.
    public static var isAvailable: Bool {
        ["nsenter", "iptables-restore", "ip6tables-restore"].allSatisfy { ExternalCommand.locate($0) != nil }
    }

    /// The `iptables-restore` input for `policy` (`ipv6` for `ip6tables-restore`), refusing
    /// `hostAddresses` and `helperNetwork` on top of the policy.
    public static func rules(for policy: NetworkPolicy, hostAddresses: [String], helperNetwork: String, ipv6: Bool) -> String {
        var rules = ["*filter", "-A OUTPUT -o lo -j ACCEPT", "-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"]
        let refused = hostAddresses.filter { $0.contains(":") == ipv6 } + (ipv6 ? ["fe80::/10"] : ["169.254.0.0/16", helperNetwork])
        for destination in refused { rules += HostFirewall.refuse(chain: "OUTPUT", match: "-d \(destination)") }
        rules += PolicyRules.rules(for: policy, chain: "OUTPUT", pass: "ACCEPT", ipv6: ipv6)
        return (rules + ["COMMIT", ""]).joined(separator: "\n")
    }

    /// Installs the rules for `policy` in the network namespace of `pid` (a process of this user
    /// in a user namespace of its own).
    public static func apply(_ policy: NetworkPolicy, toNamespaceOf pid: Int32) throws {
        let addresses = hostAddresses()
        for (tool, ipv6) in [("iptables-restore", false), ("ip6tables-restore", true)] {
            let input = rules(for: policy, hostAddresses: addresses, helperNetwork: helperNetwork, ipv6: ipv6)
            // --preserve-credentials: setgroups is denied in the VMM's namespace; the capabilities
            // come with entering it.
            let output = try ExternalCommand("nsenter", ["--target", String(pid), "--user", "--net", "--preserve-credentials", tool, "-w"])
                .run(stdin: Data(input.utf8))
            guard output.status == 0 else {
                throw VMMError.confinementFailed(
                    what: "install the VMM's network rules with \(tool) in its namespace", reason: output.stderr.trimmingCharacters(in: .whitespacesAndNewlines),
                    fix: "check that the kernel has the conntrack match and that iptables works in a user namespace (unshare -Urn iptables -S)")
            }
        }
    }

    /// Every address of the host's interfaces except loopback (which the namespace does not share).
    static func hostAddresses() -> [String] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return [] }
        defer { freeifaddrs(list) }
        var addresses: [String] = []
        for entry in sequence(first: first, next: { $0.pointee.ifa_next }) {
            guard let address = entry.pointee.ifa_addr else { continue }
            let family = Int32(address.pointee.sa_family)
            guard family == AF_INET || family == AF_INET6 else { continue }
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            let length = socklen_t(family == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
            guard getnameinfo(address, length, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 else { continue }
            let name = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let text = name.split(separator: "%").first.map(String.init) ?? ""
            if text.isEmpty || text.hasPrefix("127.") || text == "::1" || text.hasPrefix("fe80:") { continue }
            if !addresses.contains(text) { addresses.append(text) }
        }
        return addresses
    }
}
