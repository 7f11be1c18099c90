#if canImport(Glibc)
import Glibc
#endif
import CLinuxShims
import CladeModel
import CladeStore
import Foundation

/// A Kubernetes pod's network namespace, made by CNI, handed to a guest: the guest takes the
/// pod's IPv4 address and gateway, and its traffic is routed through the namespace, so the
/// cluster sees the pod's address and applies its own policy, and clade's policy applies on top.
///
/// The namespace is routed, not bridged, so that clade's filter sees every packet:
/// - a tap device (``tapName``) carries the guest's NIC; the pod's address moves from the CNI
///   interface to a host route through the tap, and the CNI interface answers ARP for it (proxy
///   ARP), as the tap answers the guest for everything beyond it;
/// - the tap also carries a private link (``hostLinkAddress`` to ``guestLinkAddress``, the
///   addresses every clade guest has), on which the owner reaches the guest agent from inside
///   the namespace; the agent's port is unreachable from the pod's network;
/// - the namespace's `FORWARD` chain drops by default, admits traffic to the pod's address and
///   replies, and sends the guest's own connections through link-local refusal and the sandbox's
///   ``NetworkPolicy``; a packet from the guest with another source address is dropped.
///
/// The rules go in before forwarding is turned on, so no packet crosses the namespace unfiltered.
public struct PodNetwork: Sendable, Equatable {
    /// The network namespace, as a path (`/var/run/netns/cni-…`).
    public let namespacePath: String
    /// The interface CNI made (`eth0` under the CRI).
    public let interface: String
    /// The pod's IPv4 address and prefix length.
    public let address: String
    public let prefixLength: Int
    /// The pod's default gateway, when CNI gave one.
    public let gateway: String?

    public static let tapName = "clade0"
    /// The namespace's end of the private link to the guest agent.
    public static let hostLinkAddress = "10.0.2.2"
    /// The address every clade guest's NIC has from its image or snapshot.
    public static let guestLinkAddress = "10.0.2.15"
    static let filterChain = "CLADE-GUEST"

    public init(namespacePath: String, interface: String, address: String, prefixLength: Int, gateway: String?) {
        self.namespacePath = namespacePath
        self.interface = interface
        self.address = address
        self.prefixLength = prefixLength
        self.gateway = gateway
    }

    /// Reads the pod's address and gateway from the namespace at `path`: the one interface with a
    /// global IPv4 address, and the default route.
    public static func inspect(namespace path: String) throws -> PodNetwork {
        let addresses = try inNamespace(path, "ip", ["-4", "-o", "address", "show", "scope", "global"]).stdout
        // "2: eth0    inet 10.88.0.5/16 brd 10.88.255.255 scope global eth0\ ..."
        let found = addresses.split(separator: "\n").compactMap { line -> (String, String, Int)? in
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count > 3, fields[2] == "inet" else { return nil }
            let parts = fields[3].split(separator: "/")
            guard parts.count == 2, let prefix = Int(parts[1]), (1...32).contains(prefix) else { return nil }
            return (fields[1].split(separator: "@").first.map(String.init) ?? "", String(parts[0]), prefix)
        }
        guard found.count == 1, let (interface, address, prefix) = found.first, !interface.isEmpty else {
            throw VMMError.confinementFailed(
                what: "give the guest the pod's network", reason: found.isEmpty
                    ? "the pod's network namespace \(path) has no IPv4 address"
                    : "the pod's network namespace \(path) has \(found.count) IPv4 addresses, and clade gives a guest one",
                fix: "check the node's CNI configuration: clade takes over a namespace with one interface and one IPv4 address")
        }
        let routes = try inNamespace(path, "ip", ["-4", "route", "show", "default"]).stdout
        let words = routes.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
        let gateway = words.firstIndex(of: "via").flatMap { $0 + 1 < words.count ? words[$0 + 1] : nil }
        return PodNetwork(namespacePath: path, interface: interface, address: address, prefixLength: prefix, gateway: gateway)
    }

    /// Takes the namespace over for a guest under `policy` and returns the tap's descriptor (for
    /// ``MachineSpec/guestNetworkDescriptor``; the caller closes it once the machine runs). On a
    /// failure the pod's address goes back where CNI put it.
    public func attach(policy: NetworkPolicy) throws -> Int32 {
        let namespace = open(namespacePath, O_RDONLY | O_CLOEXEC)
        guard namespace >= 0 else { throw StoreError.systemCall("open", path: namespacePath, errno: errno) }
        defer { close(namespace) }
        let tap = clade_netns_tap(namespace, Self.tapName)
        guard tap >= 0 else {
            throw VMMError.confinementFailed(
                what: "make the guest's tap device in the pod's network namespace", reason: String(cString: strerror(errno)),
                fix: "the containerd shim must run as root with /dev/net/tun present (modprobe tun)")
        }
        do {
            try Self.inNamespace(namespacePath, "iptables-restore", ["-w"], stdin: filterRules(policy))
            try Self.inNamespace(namespacePath, "ip", ["-batch", "-"], stdin: routingCommands())
            try Self.inNamespace(namespacePath, "sh", ["-c", forwardingSwitches()])
        } catch {
            close(tap)
            _ = try? Self.inNamespace(namespacePath, "ip", ["address", "replace", "\(address)/\(prefixLength)", "dev", interface])
            throw error
        }
        return tap
    }

    /// The `iptables-restore` input for the namespace (see the type's description).
    func filterRules(_ policy: NetworkPolicy) -> String {
        let tap = Self.tapName, pod = "\(address)/32", chain = Self.filterChain
        var rules = [
            "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]", ":\(chain) - [0:0]",
            "-A INPUT -i \(tap) -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "-A INPUT -i \(tap) -j DROP",
            "-A FORWARD -o \(tap) -d \(pod) -p tcp --dport \(MachineSpec.guestAgentPort) -j DROP",
            "-A FORWARD -o \(tap) -d \(pod) -j ACCEPT",
            "-A FORWARD -i \(tap) -s \(pod) -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "-A FORWARD -i \(tap) -s \(pod) -j \(chain)",
        ]
        rules += HostFirewall.refuse(chain: chain, match: "-d 169.254.0.0/16")
        rules += PolicyRules.rules(for: policy, chain: chain, pass: "ACCEPT", ipv6: false)
        rules.append("-A \(chain) -j ACCEPT")
        return (rules + ["COMMIT", ""]).joined(separator: "\n")
    }

    /// `ip -batch` input: the tap up with the private link, the pod's address moved off the CNI
    /// interface (which drops its routes) and the routes put back, the pod's address via the tap.
    func routingCommands() -> String {
        var commands = [
            "link set \(Self.tapName) up",
            "address add \(Self.hostLinkAddress)/24 dev \(Self.tapName)",
            "address del \(address)/\(prefixLength) dev \(interface)",
            "route replace \(Self.network(address, prefixLength)) dev \(interface)",
        ]
        if let gateway { commands.append("route replace default via \(gateway) dev \(interface)") }
        commands.append("route replace \(address)/32 dev \(Self.tapName)")
        return commands.joined(separator: "\n") + "\n"
    }

    func forwardingSwitches() -> String {
        let conf = "/proc/sys/net/ipv4/conf"
        return "echo 1 > \(conf)/\(interface)/proxy_arp && echo 1 > \(conf)/\(Self.tapName)/proxy_arp && echo 1 > /proc/sys/net/ipv4/ip_forward"
    }

    /// The shell command, run in the guest as root with `$B` the busybox every clade guest carries,
    /// that gives the guest the pod's address and route. The private link stays, and is the
    /// source of nothing else: the default route names the pod's address.
    public var guestCommand: String {
        var command = "$B ip address add \(address)/\(prefixLength) dev eth0"
        if let gateway { command += " && $B ip route replace default via \(gateway) dev eth0 src \(address)" }
        return command
    }

    /// `address/prefix` as its network, `10.88.0.0/16`.
    static func network(_ address: String, _ prefix: Int) -> String {
        let octets = address.split(separator: ".").compactMap { UInt32($0) }
        guard octets.count == 4 else { return "\(address)/\(prefix)" }
        let value = octets.reduce(0) { $0 << 8 | $1 }
        let mask: UInt32 = prefix == 0 ? 0 : ~UInt32(0) << (32 - UInt32(prefix))
        let masked = value & mask
        return "\(masked >> 24).\(masked >> 16 & 255).\(masked >> 8 & 255).\(masked & 255)/\(prefix)"
    }

    @discardableResult
    static func inNamespace(_ path: String, _ tool: String, _ arguments: [String], stdin: String? = nil) throws -> ExternalCommand.Output {
        let output = try ExternalCommand("nsenter", ["--net=\(path)", tool] + arguments).run(stdin: stdin.map { Data($0.utf8) })
        guard output.status == 0 else {
            throw VMMError.confinementFailed(
                what: "set up the pod's network namespace (\(tool) \(arguments.first ?? ""))",
                reason: output.stderr.trimmingCharacters(in: .whitespacesAndNewlines),
                fix: "check that iproute2 and iptables are installed and that the namespace \(path) still exists")
        }
        return output
    }
}
