import Foundation

/// What a sandbox's guest may reach over its network interface. The host itself (its loopback,
/// its own addresses, the daemon, other sandboxes' published ports) is never reachable, in any
/// mode, when clade runs as root; see the README's threat model.
public struct NetworkPolicy: Codable, Sendable, Equatable, CustomStringConvertible {
    public enum Mode: String, Codable, Sendable, CaseIterable {
        /// Nothing leaves the guest; only the agent channel and published ports work.
        case none
        /// Anything beyond the host: NAT through user-mode networking.
        case outbound
        /// Only the destinations listed in ``NetworkPolicy/allow``.
        case allow
        /// Anything beyond the host except the destinations in ``NetworkPolicy/deny``; those in
        /// ``NetworkPolicy/allow`` pass even when a deny entry covers them (E2B's `denyOut` and
        /// `allowOut`). A mode of its own, not `outbound` with a list, so that a clade too old to
        /// know deny lists refuses the record instead of reading it as plain `outbound`.
        case deny
    }

    public var mode: Mode
    /// The reachable destinations in `allow` mode; the exceptions to ``deny`` in `deny` mode.
    public var allow: [NetworkDestination]
    /// The refused destinations in `deny` mode.
    public var deny: [NetworkDestination]
    /// Host names admitted like ``allow``'s destinations, in `allow` and `deny` mode: only on
    /// HTTP (port 80) and TLS (port 443), where the egress proxy reads the name a connection is
    /// for. A policy with names needs that proxy (``usesEgressProxy``).
    public var domains: [NetworkDomain]
    /// Headers set on HTTP and HTTPS requests to some hosts, in any mode but `none`; they need
    /// the egress proxy too. Only E2B's API sets them (its `rules`): the text form has none.
    public var transforms: [NetworkTransform]

    public init(
        mode: Mode, allow: [NetworkDestination] = [], deny: [NetworkDestination] = [], domains: [NetworkDomain] = [], transforms: [NetworkTransform] = []
    ) {
        self.mode = mode
        self.allow = mode == .allow || mode == .deny ? allow : []
        self.deny = mode == .deny ? deny : []
        self.domains = mode == .allow || mode == .deny ? domains : []
        self.transforms = mode == .none ? [] : transforms
    }

    /// True when names are admitted or requests changed, which only the egress proxy can do.
    public var usesEgressProxy: Bool { !domains.isEmpty || !transforms.isEmpty }

    /// The headers to set on requests to `host`: those of every transform matching it, later
    /// ones overriding earlier ones; nil when none matches.
    public func headers(forHost host: String) -> [String: String]? {
        let matching = transforms.filter { $0.host.matches(host) }
        guard !matching.isEmpty else { return nil }
        return matching.reduce(into: [:]) { merged, transform in merged.merge(transform.headers) { _, new in new } }
    }

    /// Whether a connection to `host` (a TLS server name or HTTP `Host`) is admitted by name.
    public func admits(name host: String) -> Bool { domains.contains { $0.matches(host) } }

    /// Whether the address rules admit a connection to the IPv4 `address` (host byte order) on
    /// `port`, as the packet filter would: the egress proxy's verdict for a name no domain admits.
    public func admits(address: UInt32, port: Int) -> Bool {
        if allow.contains(where: { $0.covers(address, port: port) }) { return true }
        switch mode {
        case .outbound: return true
        case .none, .allow: return false
        case .deny: return !deny.contains { $0.covers(address, port: port) }
        }
    }

    /// New sandboxes and snapshots that record no policy get this one.
    public static let standard = NetworkPolicy(mode: .outbound)
    public static let isolated = NetworkPolicy(mode: .none)
    /// Everything refused by the packet filter, while the guest keeps its network interface (so
    /// the policy can be changed while it runs, unlike `none`); E2B's "all traffic" denied.
    public static let denyAll = NetworkPolicy(mode: .deny, deny: [.everywhere])

    /// True when a deny entry covers every IPv4 address (`0.0.0.0/0`, E2B's "all traffic"): then
    /// IPv6 is refused too, since the lists cannot name IPv6 destinations.
    public var deniesAllTraffic: Bool { mode == .deny && deny.contains { $0.prefixLength == 0 && $0.port == nil } }

    /// Parses `none`, `outbound`, `allow:DEST[,DEST...]` or `deny:DEST[,DEST...][;allow:DEST[,DEST...]]`
    /// (DEST is `CIDR[:PORT]`, e.g. `allow:10.0.0.0/8:443,192.0.2.7`, `deny:0.0.0.0/0;allow:192.0.2.7`;
    /// an allow list may also name hosts: `deny:0.0.0.0/0;allow:pypi.org,*.pythonhosted.org`).
    public init(parsing text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let mode = Mode(rawValue: trimmed), mode != .allow, mode != .deny {
            self.init(mode: mode)
            return
        }
        let usage = "write none, outbound, allow:DEST[,DEST...], or deny:CIDR[:PORT][,...][;allow:DEST[,DEST...]] (DEST is CIDR[:PORT] or a host name such as example.com or *.example.com)"
        func entries(_ part: Substring, after prefix: String) throws -> [String] {
            let entries = part.dropFirst(prefix.count).split(separator: ",").map { String($0) }
            guard !entries.isEmpty else { throw ModelError.invalidNetworkPolicy(text, reason: "\(prefix) needs at least one destination") }
            return entries
        }
        func destinations(_ part: Substring, after prefix: String) throws -> [NetworkDestination] {
            try entries(part, after: prefix).map { try NetworkDestination(parsing: $0) }
        }
        // An allow list may name hosts as well as addresses; a deny list takes addresses only.
        func admitted(_ part: Substring) throws -> (addresses: [NetworkDestination], names: [NetworkDomain]) {
            let all = try entries(part, after: "allow:")
            let names = try all.filter(NetworkDomain.looksLikeName).map { try NetworkDomain(parsing: $0) }
            return (try all.filter { !NetworkDomain.looksLikeName($0) }.map { try NetworkDestination(parsing: $0) }, names)
        }
        if trimmed.hasPrefix("allow:") {
            let admitted = try admitted(Substring(trimmed))
            self.init(mode: .allow, allow: admitted.addresses, domains: admitted.names)
            return
        }
        guard trimmed.hasPrefix("deny:") else { throw ModelError.invalidNetworkPolicy(text, reason: usage) }
        let parts = trimmed.split(separator: ";", omittingEmptySubsequences: false)
        guard parts.count <= 2, parts.count == 1 || parts[1].hasPrefix("allow:") else { throw ModelError.invalidNetworkPolicy(text, reason: usage) }
        let deny = try destinations(parts[0], after: "deny:")
        let allow: (addresses: [NetworkDestination], names: [NetworkDomain]) = parts.count == 2 ? try admitted(parts[1]) : ([], [])
        self.init(mode: .deny, allow: allow.addresses, deny: deny, domains: allow.names)
    }

    /// The form ``init(parsing:)`` reads.
    public var description: String {
        switch mode {
        case .none, .outbound: return mode.rawValue
        case .allow: return "allow:" + admitted.joined(separator: ",")
        case .deny:
            let exceptions = admitted.isEmpty ? "" : ";allow:" + admitted.joined(separator: ",")
            return "deny:" + deny.map(\.description).joined(separator: ",") + exceptions
        }
    }

    /// The allow list as text: addresses, then names.
    private var admitted: [String] { allow.map(\.description) + domains.map(\.description) }

    enum CodingKeys: String, CodingKey { case mode, allow, deny, domains, transforms }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let mode = try container.decode(Mode.self, forKey: .mode)
        let allow = try container.decodeIfPresent([NetworkDestination].self, forKey: .allow) ?? []
        let deny = try container.decodeIfPresent([NetworkDestination].self, forKey: .deny) ?? []
        let domains = try container.decodeIfPresent([NetworkDomain].self, forKey: .domains) ?? []
        let transforms = try container.decodeIfPresent([NetworkTransform].self, forKey: .transforms) ?? []
        if mode == .allow, allow.isEmpty, domains.isEmpty {
            throw DecodingError.dataCorruptedError(forKey: .allow, in: container, debugDescription: "mode 'allow' needs at least one destination")
        }
        if mode == .deny, deny.isEmpty {
            throw DecodingError.dataCorruptedError(forKey: .deny, in: container, debugDescription: "mode 'deny' needs at least one destination")
        }
        self.init(mode: mode, allow: allow, deny: deny, domains: domains, transforms: transforms)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(mode, forKey: .mode)
        if mode == .allow || (mode == .deny && !allow.isEmpty) { try container.encode(allow, forKey: .allow) }
        if mode == .deny { try container.encode(deny, forKey: .deny) }
        if !domains.isEmpty { try container.encode(domains, forKey: .domains) }
        if !transforms.isEmpty { try container.encode(transforms, forKey: .transforms) }
    }
}

/// One IPv4 destination an allow-list admits: a network and, optionally, one port (TCP and UDP).
public struct NetworkDestination: TextCodable, Sendable, Equatable {
    /// The network address, normalized (host bits cleared).
    public let address: String
    public let prefixLength: Int
    public let port: Int?

    /// Every IPv4 address, `0.0.0.0/0`.
    public static let everywhere = NetworkDestination(address: "0.0.0.0", prefixLength: 0, port: nil)

    private init(address: String, prefixLength: Int, port: Int?) {
        self.address = address
        self.prefixLength = prefixLength
        self.port = port
    }

    public init(parsing text: String) throws {
        let parts = text.trimmingCharacters(in: .whitespaces).split(separator: ":", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count) else {
            throw ModelError.invalidNetworkPolicy(text, reason: "a destination is CIDR[:PORT], e.g. 10.0.0.0/8:443 (IPv4 only)")
        }
        var port: Int?
        if parts.count == 2 {
            guard let value = Int(parts[1]), (1...65535).contains(value) else {
                throw ModelError.invalidNetworkPolicy(text, reason: "the port must be 1-65535")
            }
            port = value
        }
        let network = parts[0].split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(network.count), let octets = Self.octets(network[0]) else {
            throw ModelError.invalidNetworkPolicy(text, reason: "'\(parts[0])' is not an IPv4 address or CIDR")
        }
        let prefix = network.count == 2 ? Int(network[1]) : 32
        guard let prefix, (0...32).contains(prefix) else {
            throw ModelError.invalidNetworkPolicy(text, reason: "the prefix length must be 0-32")
        }
        let masked = Self.value(octets) & Self.mask(prefix)
        address = (0..<4).map { String((masked >> (24 - 8 * $0)) & 0xff) }.joined(separator: ".")
        prefixLength = prefix
        self.port = port
    }

    /// `ADDRESS/PREFIX`, as iptables takes it.
    public var cidr: String { "\(address)/\(prefixLength)" }

    /// Whether this destination covers the IPv4 `value` (host byte order) on `port`.
    public func covers(_ value: UInt32, port: Int) -> Bool {
        guard self.port == nil || self.port == port, let network = Self.octets(Substring(address)) else { return false }
        return value & Self.mask(prefixLength) == Self.value(network)
    }

    public var description: String { port.map { "\(cidr):\($0)" } ?? cidr }

    /// An address's four octets as one number, host byte order.
    private static func value(_ octets: [UInt8]) -> UInt32 { octets.reduce(UInt32(0)) { $0 << 8 | UInt32($1) } }

    /// The network mask of a prefix length.
    private static func mask(_ prefixLength: Int) -> UInt32 { prefixLength == 0 ? 0 : ~UInt32(0) << (32 - prefixLength) }

    private static func octets(_ text: Substring) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        let values = parts.compactMap { $0.count <= 3 && $0.allSatisfy(\.isNumber) ? UInt8($0) : nil }
        return values.count == 4 ? values : nil
    }
}
