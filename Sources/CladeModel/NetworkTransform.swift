import Foundation

/// Headers the egress proxy sets on a sandbox's HTTP requests to matching hosts (E2B's `rules`
/// transforms): a header of the same name the guest sent is replaced. HTTPS requests are
/// changed too: the proxy ends the guest's TLS with a certificate from the store's interception
/// authority, which clade adds to the guest's trust store, and opens its own TLS to the host.
/// A transform admits nothing by itself; the policy's address and name rules still decide.
public struct NetworkTransform: Codable, Sendable, Equatable {
    /// The hosts (TLS server name or HTTP `Host`) whose requests are changed.
    public var host: NetworkDomain
    /// Header name to value, set on every request to ``host``.
    public var headers: [String: String]

    public init(host: NetworkDomain, headers: [String: String]) throws {
        for (name, value) in headers {
            guard Self.isToken(name) else {
                throw ModelError.invalidNetworkPolicy(name, reason: "'\(name)' is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)")
            }
            guard !value.unicodeScalars.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" }) else {
                throw ModelError.invalidNetworkPolicy(name, reason: "the value of header '\(name)' holds a line break or NUL, which would split the request")
            }
            guard !Self.framingHeaders.contains(name.lowercased()) else {
                throw ModelError.invalidNetworkPolicy(name, reason: "'\(name)' frames or routes the request and cannot be set by a transform")
            }
        }
        self.host = host
        self.headers = headers
    }

    enum CodingKeys: String, CodingKey { case host, headers }

    /// Decodes through ``init(host:headers:)``, so a stored record is checked as a request is.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try self.init(host: try container.decode(NetworkDomain.self, forKey: .host), headers: try container.decode([String: String].self, forKey: .headers))
    }

    /// Headers that decide where a request goes or where it ends; replacing them would let a
    /// transform desynchronize the proxy from the server.
    static let framingHeaders: Set<String> = ["host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"]

    /// RFC 9110's `token`.
    static func isToken(_ name: String) -> Bool {
        let symbols = Set("!#$%&'*+-.^_`|~".unicodeScalars)
        return !name.isEmpty && name.unicodeScalars.allSatisfy { ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || symbols.contains($0) }
    }
}
