import AsyncHTTPClient
import CladeEngine
import CladeModel
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1

/// Proxies HTTP requests whose Host is `<port>-<sandbox id>.<domain>` to that guest port, so a
/// dev server in a sandbox has a URL (the preview-URL scheme E2B's `get_host` uses). The port
/// is published on first use. Such requests need no API token: they are the sandbox's own
/// traffic, and the proxy exists only when `clade serve --proxy-domain` turns it on.
struct GuestPortProxyMiddleware<Context: RequestContext>: RouterMiddleware {
    let domain: String
    let engine: Engine
    /// The Host the guest's server is sent instead of the public one (E2B's `maskRequestHost`),
    /// with `${PORT}` standing for the guest port; nil keeps the public Host.
    var hostMask: String? = nil

    /// Headers that belong to one connection, not to the request (RFC 9110, 7.6.1).
    static var hopByHop: Set<String> { ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host"] }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let authority = request.head.authority, let target = Self.target(of: authority, domain: domain) else {
            return try await next(request, context)
        }
        let published: PublishedPort
        do {
            published = try await engine.sandboxes.publishPort(id: target.sandbox, guestPort: target.port)
        } catch {
            return JSONIO.error(APIError.from(error))
        }
        var outgoing = HTTPClientRequest(url: "http://\(published.hostAddress)\(request.uri.description)")
        outgoing.method = HTTPMethod(rawValue: request.method.rawValue)
        for field in request.headers where !Self.hopByHop.contains(field.name.canonicalName) {
            outgoing.headers.add(name: field.name.rawName, value: field.value)
        }
        outgoing.headers.add(name: "Host", value: hostMask.map { Self.host(masking: $0, port: target.port) } ?? authority)
        outgoing.headers.add(name: "X-Forwarded-Host", value: authority)
        // Sent from memory, not streamed: the client retries a request whose connection closed
        // before an answer (a guest server not listening yet, a restarted VMM behind a pooled
        // connection), and a streamed request body can be read only once (a second read traps,
        // which took the whole daemon down).
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: Self.maxBodyBytes)
        } catch {
            return JSONIO.error(APIError(.contentTooLarge, "a request body for guest port \(target.port) of sandbox \(target.sandbox) must be at most \(Self.maxBodyBytes / 1_048_576) MiB (\(error))"))
        }
        if body.readableBytes > 0 { outgoing.body = .bytes(body) }
        let response: HTTPClientResponse
        do {
            response = try await HTTPClient.shared.execute(outgoing, timeout: .seconds(300))
        } catch {
            return JSONIO.error(APIError(.badGateway, "guest port \(target.port) of sandbox \(target.sandbox) does not answer (\(error)); is a server listening on it in the guest?"))
        }
        var headers = HTTPFields()
        for (name, value) in response.headers where !Self.hopByHop.contains(name.lowercased()) {
            if let fieldName = HTTPField.Name(name) { headers.append(HTTPField(name: fieldName, value: value)) }
        }
        return Response(status: .init(code: Int(response.status.code)), headers: headers, body: ResponseBody(asyncSequence: response.body))
    }

    /// `mask` with each `${PORT}` replaced by `port`.
    static func host(masking mask: String, port: Int) -> String {
        mask.replacingOccurrences(of: "${PORT}", with: String(port))
    }

    /// The largest request body forwarded to a guest port.
    static var maxBodyBytes: Int { 64 * 1_048_576 }

    /// The guest port and sandbox id a Host names under `domain`, or nil for other hosts.
    static func target(of authority: String, domain: String) -> (port: Int, sandbox: String)? {
        var host = authority.lowercased()
        if let colon = host.lastIndex(of: ":"), !host.hasSuffix("]") { host = String(host[..<colon]) }
        let suffix = "." + domain.lowercased()
        guard host.hasSuffix(suffix) else { return nil }
        let label = host.dropLast(suffix.count)
        guard !label.contains("."), let dash = label.firstIndex(of: "-"), let port = Int(label[..<dash]), (1...65535).contains(port) else { return nil }
        let id = String(label[label.index(after: dash)...])
        guard (try? Names.validateSandboxID(id)) != nil else { return nil }
        return (port, id)
    }
}
