import CladeEngine
import CladeModel
import Foundation

/// E2B's egress settings (`network` at create, the body of `PUT /sandboxes/{id}/network`) as
/// clade's ``NetworkPolicy``, which the VMM's packet filter enforces.
///
/// `denyOut` refuses its destinations and `allowOut` admits its own even where a deny entry
/// covers them; `allowOut` alone restricts nothing, as in E2B. `allow_internet_access: false`
/// is a deny of all traffic. Entries are IPv4 addresses or CIDRs, and `allowOut` may also name
/// hosts (`example.com`, `*.example.com`), which the daemon's egress proxy enforces on HTTP and
/// TLS. Transforms (`rules`) would need the proxy to terminate TLS, which it does not: a request
/// that asks for them is refused, never accepted and left unenforced. `maskRequestHost` is
/// ingress, not egress: ``hostMask(_:)`` reads it.
struct E2BNetworkConfig: Codable, Sendable, Equatable {
    var allowOut: [String]
    var denyOut: [String]

    /// Reads `message` (nil when the request has none) and the policy it gives. `allowInternetAccess`
    /// is the request's top-level `allow_internet_access`, when given.
    static func read(_ message: ProtoJSON?, allowInternetAccess: Bool?) throws -> (config: E2BNetworkConfig, policy: NetworkPolicy) {
        var config = E2BNetworkConfig(allowOut: message?.strings("allowOut") ?? [], denyOut: message?.strings("denyOut") ?? [])
        if let message {
            for field in ["rules", "egressProxy"] where message.has(field) && !Self.isEmpty(message, field) {
                throw E2BError(
                    400,
                    "network.\(field) needs an egress proxy that terminates the sandbox's TLS to change its requests, which clade does not do; "
                        + "clade enforces egress by address, and by host name on HTTP and TLS without changing the traffic: leave \(field) out")
            }
        }
        if allowInternetAccess == false, !config.denyOut.contains(NetworkDestination.everywhere.cidr) {
            config.denyOut.append(NetworkDestination.everywhere.cidr)
        }
        return (config, try config.policy())
    }

    /// `maskRequestHost` of a create request's `network`: the Host that requests through the
    /// sandbox's public port URLs reach its servers with (`${PORT}` is the guest port). Only a
    /// host name or address with an optional port is taken, so a mask cannot smuggle a header
    /// or a path into the forwarded request.
    static func hostMask(_ message: ProtoJSON?) throws -> String? {
        guard let mask = message?.string("maskRequestHost"), !mask.isEmpty else { return nil }
        let expanded = GuestPortProxyMiddleware<E2BContext>.host(masking: mask, port: 1)
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:_[]")
        guard expanded.count <= 261, expanded.allSatisfy(allowed.contains), expanded.first != ":" else {
            throw E2BError(
                400,
                "network.maskRequestHost '\(mask)' is not a host with an optional port: give a name such as custom-host.example.com or localhost:${PORT} (${PORT} is the guest port)")
        }
        return mask
    }

    /// The policy these lists give; `outbound` when nothing is denied.
    func policy() throws -> NetworkPolicy {
        let deny = try denyOut.map { try Self.destination($0, field: "denyOut") }
        let names = try allowOut.filter(NetworkDomain.looksLikeName).map { entry in
            do { return try NetworkDomain(parsing: entry) } catch { throw E2BError(400, "allowOut entry '\(entry)' is not a host name (e.g. example.com or *.example.com)") }
        }
        let allow = try allowOut.filter { !NetworkDomain.looksLikeName($0) }.map { try Self.destination($0, field: "allowOut") }
        guard !deny.isEmpty else { return .standard }
        return NetworkPolicy(mode: .deny, allow: allow, deny: deny, domains: names)
    }

    /// The `network` object of a sandbox's detail.
    var json: [String: Any] { ["allowOut": allowOut, "denyOut": denyOut] }

    private static func destination(_ entry: String, field: String) throws -> NetworkDestination {
        let text = entry.trimmingCharacters(in: .whitespaces)
        if text.contains(":") {
            throw E2BError(400, "\(field) entry '\(entry)' is IPv6: clade's egress rules take IPv4 addresses and CIDRs (IPv6 is refused whenever all traffic is denied)")
        }
        if text.contains(where: \.isLetter) {
            throw E2BError(400, "\(field) entry '\(entry)' is a domain name: host names are taken in allowOut only, as in E2B; deny by address or CIDR")
        }
        do {
            return try NetworkDestination(parsing: text)
        } catch {
            throw E2BError(400, "\(field) entry '\(entry)' is not an IPv4 address or CIDR (e.g. 8.8.8.8 or 10.0.0.0/8)")
        }
    }

    private static func isEmpty(_ message: ProtoJSON, _ field: String) -> Bool {
        if let text = message.string(field) { return text.isEmpty }
        if let object = message.message(field) { return object.fields.isEmpty }
        return false
    }
}

extension E2BService {
    /// Replaces a running sandbox's egress rules (fields left out are cleared, as E2B does).
    func updateNetwork(_ id: String, _ body: ProtoJSON) async throws {
        let (record, current) = try await require(id)
        guard record.state != .standby else { throw E2BError(409, "sandbox \(id) is paused; connect to it before changing its network") }
        let internet: Bool? = body.has("allow_internet_access") ? body.bool("allow_internet_access") : nil
        if body.has("maskRequestHost") {
            throw E2BError(400, "network.maskRequestHost is set when the sandbox is created; PUT /sandboxes/\(id)/network changes its egress rules only")
        }
        let egress = try E2BNetworkConfig.read(body, allowInternetAccess: internet)
        try await engine.sandboxes.setNetwork(id: id, policy: egress.policy)
        var state = current
        state.network = egress.config
        state.allowInternetAccess = internet
        try states.put(state)
    }
}
