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
    }

    public var mode: Mode
    /// The reachable destinations in `allow` mode.
    public var allow: [NetworkDestination]

    public init(mode: Mode, allow: [NetworkDestination] = []) {
        self.mode = mode
        self.allow = mode == .allow ? allow : []
    }

    /// New sandboxes and snapshots that record no policy get this one.
    public static let standard = NetworkPolicy(mode: .outbound)
    public static let isolated = NetworkPolicy(mode: .none)

    /// Parses `none`, `outbound`, or `allow:DEST[,DEST...]` (DEST is `CIDR[:PORT]`, e.g.
    /// `allow:10.0.0.0/8:443,192.0.2.7`).
    public init(parsing text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let mode = Mode(rawValue: trimmed), mode != .allow {
            self.init(mode: mode)
            return
        }
        guard trimmed.hasPrefix("allow:") else {
            throw ModelError.invalidNetworkPolicy(text, reason: "write none, outbound, or allow:CIDR[:PORT][,CIDR[:PORT]...]")
        }
        let entries = trimmed.dropFirst("allow:".count).split(separator: ",").map { String($0) }
        guard !entries.isEmpty else { throw ModelError.invalidNetworkPolicy(text, reason: "allow: needs at least one destination") }
        self.init(mode: .allow, allow: try entries.map { try NetworkDestination(parsing: $0) })
    }

    /// The form ``init(parsing:)`` reads.
    public var description: String {
        mode == .allow ? "allow:" + allow.map(\.description).joined(separator: ",") : mode.rawValue
    }

    enum CodingKeys: String, CodingKey { case mode, allow }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let mode = try container.decode(Mode.self, forKey: .mode)
        let allow = try container.decodeIfPresent([NetworkDestination].self, forKey: .allow) ?? []
        if mode == .allow, allow.isEmpty {
            throw DecodingError.dataCorruptedError(forKey: .allow, in: container, debugDescription: "mode 'allow' needs at least one destination")
        }
        self.init(mode: mode, allow: allow)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(mode, forKey: .mode)
        if mode == .allow { try container.encode(allow, forKey: .allow) }
    }
}

/// One IPv4 destination an allow-list admits: a network and, optionally, one port (TCP and UDP).
public struct NetworkDestination: Codable, Sendable, Equatable, CustomStringConvertible {
    /// The network address, normalized (host bits cleared).
    public let address: String
    public let prefixLength: Int
    public let port: Int?

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
        let value = octets.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let mask: UInt32 = prefix == 0 ? 0 : ~UInt32(0) << (32 - prefix)
        let masked = value & mask
        address = (0..<4).map { String((masked >> (24 - 8 * $0)) & 0xff) }.joined(separator: ".")
        prefixLength = prefix
        self.port = port
    }

    /// `ADDRESS/PREFIX`, as iptables takes it.
    public var cidr: String { "\(address)/\(prefixLength)" }

    public var description: String { port.map { "\(cidr):\($0)" } ?? cidr }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do {
            try self.init(parsing: text)
        } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "\(error)"))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    private static func octets(_ text: Substring) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        let values = parts.compactMap { $0.count <= 3 && $0.allSatisfy(\.isNumber) ? UInt8($0) : nil }
        return values.count == 4 ? values : nil
    }
}
