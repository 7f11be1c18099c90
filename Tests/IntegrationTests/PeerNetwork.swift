import CladeStore
import Foundation

/// A network namespace behind a veth pair, standing for "somewhere beyond the host": the host
/// routes to its addresses through the pair, and none of them is an address of the host's own,
/// so a guest's traffic to them is judged by its policy, not by the rule that keeps it off the host.
/// Needs root (`ip netns`).
struct PeerNetwork: Sendable {
    let namespace: String
    /// The pair's names: `<link>0` on the host, `<link>1` in the namespace.
    let link: String
    /// The host's end, `ADDRESS/PREFIX`.
    let hostCIDR: String
    /// The namespace's addresses, each `ADDRESS/PREFIX` on the same network as ``hostCIDR``.
    let peerCIDRs: [String]

    var addresses: [String] { peerCIDRs.map { String($0.prefix { $0 != "/" }) } }

    func create() throws {
        remove()
        var commands = [
            ["netns", "add", namespace],
            ["link", "add", "\(link)0", "type", "veth", "peer", "name", "\(link)1"],
            ["link", "set", "\(link)1", "netns", namespace],
            ["addr", "add", hostCIDR, "dev", "\(link)0"],
            ["link", "set", "\(link)0", "up"],
        ]
        commands += peerCIDRs.map { ["netns", "exec", namespace, "ip", "addr", "add", $0, "dev", "\(link)1"] }
        commands += [
            ["netns", "exec", namespace, "ip", "link", "set", "\(link)1", "up"],
            ["netns", "exec", namespace, "ip", "link", "set", "lo", "up"],
        ]
        for command in commands { _ = try ExternalCommand("ip", command).check() }
    }

    func remove() {
        _ = try? ExternalCommand("ip", ["link", "del", "\(link)0"]).run()
        _ = try? ExternalCommand("ip", ["netns", "del", namespace]).run()
    }
}
