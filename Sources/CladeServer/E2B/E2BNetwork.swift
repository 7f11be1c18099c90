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
/// TLS. `rules` maps hosts to transforms whose headers the egress proxy sets on the sandbox's
/// HTTP and HTTPS requests to them (see ``NetworkTransform``). `egressProxy` (a SOCKS5 proxy of
/// the user's) is refused: nothing would forward the sandbox's traffic there. `maskRequestHost`
/// is ingress, not egress: ``hostMask(_:)`` reads it.
struct E2BNetworkConfig: Codable, Sendable, Equatable {
    var allowOut: [String]
    var denyOut: [String]
    /// Host to the headers its requests get, from `rules` (header values are not shown back).
    var transforms: [String: [String: String]]?

    /// Reads `message` (nil when the request has none) and the policy it gives. `allowInternetAccess`
    /// is the request's top-level `allow_internet_access`, when given.
    static func read(_ message: ProtoJSON?, allowInternetAccess: Bool?) throws -> (config: E2BNetworkConfig, policy: NetworkPolicy) {
        var config = E2BNetworkConfig(allowOut: message?.strings("allowOut") ?? [], denyOut: message?.strings("denyOut") ?? [])
        if let message, message.has("egressProxy"), !Self.isEmpty(message, "egressProxy") {
            throw E2BError(
                400, "network.egressProxy names a SOCKS5 proxy for the sandbox's traffic, which clade does not forward to (as E2B's open-source deployment does not): leave it out")
        }
        config.transforms = try message.flatMap { try Self.transforms($0) }
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

    /// `rules`: `{HOST: [{"transform": {"headers": {NAME: VALUE}}}, ...]}`, later rules for a host overriding earlier ones.
    static func transforms(_ message: ProtoJSON) throws -> [String: [String: String]]? {
        guard message.has("rules") else { return nil }
        guard let rules = message.fields["rules"] as? [String: Any] else { throw E2BError(400, "network.rules must be an object of host to a list of rules") }
        var transforms: [String: [String: String]] = [:]
        for (host, list) in rules {
            guard let list = list as? [Any] else { throw E2BError(400, "network.rules['\(host)'] must be a list of rules") }
            for rule in list {
                guard let rule = rule as? [String: Any], let transform = rule["transform"] as? [String: Any], Set(rule.keys) == ["transform"] else {
                    throw E2BError(400, "network.rules['\(host)']: each rule is {\"transform\": {\"headers\": {...}}}, the only rule clade (and E2B) knows")
                }
                guard Set(transform.keys).isSubset(of: ["headers"]), let headers = (transform["headers"] ?? [String: Any]()) as? [String: Any],
                    let values = headers as? [String: String]
                else { throw E2BError(400, "network.rules['\(host)']: a transform has only headers, an object of header name to string value") }
                transforms[host, default: [:]].merge(values) { _, new in new }
            }
        }
        // A host whose rules set nothing needs no proxy.
        transforms = transforms.filter { !$0.value.isEmpty }
        return transforms.isEmpty ? nil : transforms
    }

    /// The transforms of ``transforms`` as the policy's.
    private func networkTransforms() throws -> [NetworkTransform] {
        try (transforms ?? [:]).sorted { $0.key < $1.key }.map { host, headers in
            guard NetworkDomain.looksLikeName(host), let domain = try? NetworkDomain(parsing: host) else {
                throw E2BError(400, "network.rules key '\(host)' is not a host name: clade applies transforms by host name (example.com or *.example.com), not by address")
            }
            do { return try NetworkTransform(host: domain, headers: headers) } catch { throw E2BError(400, "network.rules['\(host)']: \(error)") }
        }
    }

    /// The policy these lists give; `outbound` when nothing is denied.
    func policy() throws -> NetworkPolicy {
        let deny = try denyOut.map { try Self.destination($0, field: "denyOut") }
        let names = try allowOut.filter(NetworkDomain.looksLikeName).map { entry in
            do { return try NetworkDomain(parsing: entry) } catch { throw E2BError(400, "allowOut entry '\(entry)' is not a host name (e.g. example.com or *.example.com)") }
        }
        let allow = try allowOut.filter { !NetworkDomain.looksLikeName($0) }.map { try Self.destination($0, field: "allowOut") }
        let transforms = try networkTransforms()
        guard !deny.isEmpty else { return NetworkPolicy(mode: .outbound, transforms: transforms) }
        return NetworkPolicy(mode: .deny, allow: allow, deny: deny, domains: names, transforms: transforms)
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
        if !egress.policy.transforms.isEmpty { try await trustEgressAuthority(id) }
        try await engine.sandboxes.setNetwork(id: id, policy: egress.policy)
        var state = current
        state.network = egress.config
        state.allowInternetAccess = internet
        try states.put(state)
    }
}

extension E2BService {
    /// Where clade puts its interception authority in a guest: beside the bundle's sources (so a
    /// later `update-ca-certificates` keeps it) and appended to the bundle that curl, OpenSSL and
    /// Python's `ssl` read. Runtimes with bundles of their own (certifi, Node) do not see it.
    static let guestAuthorityFile = "/usr/local/share/ca-certificates/clade-egress.crt"
    static let guestBundle = "/etc/ssl/certs/ca-certificates.crt"

    /// Makes the guest of `id` trust the egress proxy's interception authority, which its
    /// transforms need for HTTPS; at most once per guest.
    func trustEgressAuthority(_ id: String) async throws {
        let pem = try EgressAuthority.certificatePEM(state: engine.home.state)
        let script = """
            set -e
            mkdir -p "${1%/*}" "${2%/*}"
            cat > "$1"
            line=$(sed -n 2p "$1")
            grep -qF "$line" "$2" 2>/dev/null || cat "$1" >> "$2"
            """
        let reply = try await engine.processes.agent(for: id).exec(["sh", "-c", script, "sh", Self.guestAuthorityFile, Self.guestBundle], stdin: pem, timeout: 30)
        guard reply.exitCode == 0 else {
            throw E2BError(500, "cannot add clade's egress authority to sandbox \(id)'s trust store (exit \(reply.exitCode ?? -1)): \(reply.stderr ?? "")")
        }
    }
}
