import Foundation

/// A host name an allow list admits: `example.com` (that name only) or `*.example.com` (every
/// name below it, not `example.com` itself). The packet filter cannot see names, so these are
/// enforced by the egress proxy on HTTP (port 80, its `Host`) and TLS (port 443, its server
/// name), as E2B's domain rules are; other ports and UDP follow the address rules alone.
public struct NetworkDomain: TextCodable, Sendable, Hashable {
    /// The name, lowercased, without a trailing dot; with `*.` in front for a wildcard.
    public let pattern: String

    public init(parsing text: String) throws {
        var name = text.trimmingCharacters(in: .whitespaces).lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        let wildcard = name.hasPrefix("*.")
        let labels = (wildcard ? String(name.dropFirst(2)) : name).split(separator: ".", omittingEmptySubsequences: false)
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789-_")
        let valid = name.utf8.count <= 253 && labels.count >= 1
            && labels.allSatisfy { !$0.isEmpty && $0.count <= 63 && $0.allSatisfy(allowed.contains) && $0.first != "-" && $0.last != "-" }
            // A name of digits and dots is an address, which belongs in the address rules.
            && !labels.allSatisfy { $0.allSatisfy(\.isNumber) }
        guard valid else {
            throw ModelError.invalidNetworkPolicy(
                text, reason: "'\(text)' is not a host name: give a name such as example.com or *.example.com (internationalized names in punycode)")
        }
        pattern = name
    }

    /// Whether `host` (a TLS server name or an HTTP `Host`, without its port) is one this
    /// pattern admits. Case and a trailing dot do not matter.
    public func matches(_ host: String) -> Bool {
        var name = host.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        guard pattern.hasPrefix("*.") else { return name == pattern }
        let suffix = pattern.dropFirst(1)
        return name.count > suffix.count && name.hasSuffix(suffix)
    }

    /// True when `text` reads as a host name rather than an address or CIDR (it has a letter).
    public static func looksLikeName(_ text: String) -> Bool { text.contains { $0.isLetter } && !text.contains(":") && !text.contains("/") }

    public var description: String { pattern }
}
