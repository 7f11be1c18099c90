#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import Foundation
import Hummingbird
import Logging
import Metrics

/// Turns every error into `{"error": "..."}` with its status, logs the request, counts errors
/// by route, and appends state-changing calls to the audit log.
struct ErrorAndAuditMiddleware<Context: RequestContext>: RouterMiddleware {
    let audit: AuditLog
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = Date()
        var response: Response
        var message: String?
        do {
            response = try await next(request, context)
        } catch {
            let apiError = APIError.from(error)
            message = apiError.message
            response = JSONIO.error(apiError)
        }
        let route = context.endpointPath ?? "unmatched"
        let milliseconds = Date().timeIntervalSince(start) * 1000
        if response.status.code >= 400 {
            Counter(label: "clade_http_errors_total", dimensions: [("route", route), ("status", "\(response.status.code)")]).increment()
        }
        Timer(label: "clade_http_request_duration_seconds", dimensions: [("route", route)]).recordMilliseconds(milliseconds)
        logger.info("request", metadata: [
            "method": "\(request.method.rawValue)", "path": "\(request.uri.path)", "status": "\(response.status.code)",
            "ms": "\(Int(milliseconds))",
        ])
        if request.method != .get && request.method != .head {
            audit.record(method: request.method.rawValue, path: request.uri.path, status: Int(response.status.code), milliseconds: milliseconds, error: message)
        }
        return response
    }
}

/// With a token configured, every route but `/healthz` needs `Authorization: Bearer <token>`.
struct BearerTokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: [UInt8]?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let token, request.uri.path != "/healthz" else { return try await next(request, context) }
        let header = request.headers[.authorization] ?? ""
        let prefix = "Bearer "
        guard header.hasPrefix(prefix), Self.constantTimeEqual(Array(header.dropFirst(prefix.count).utf8), token) else {
            return JSONIO.error(APIError(.unauthorized, "missing or wrong bearer token; send Authorization: Bearer <token from the daemon's --token-file>"))
        }
        return try await next(request, context)
    }

    /// Compares without an early exit, so the time taken says nothing about where a guess differs.
    static func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: lhs.count ^ rhs.count)
        for index in 0..<max(lhs.count, rhs.count) {
            let left = index < lhs.count ? lhs[index] : 0
            let right = index < rhs.count ? rhs[index] : 0
            difference |= left ^ right
        }
        return difference == 0
    }
}

/// JSON lines, one per state-changing call, in `state/audit.log` of the store.
final class AuditLog: Sendable {
    /// Serializes appends so lines never interleave.
    private let writer = Locked(())
    private let fd: Int32

    init(url: URL) throws {
        fd = try FileSystem.open(url, flags: O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, mode: 0o600)
    }

    deinit { close(fd) }

    func record(method: String, path: String, status: Int, milliseconds: Double, error: String?) {
        var entry: [String: String] = [
            "time": ISO8601DateFormatter().string(from: Date()), "method": method, "path": path, "status": "\(status)",
            "ms": String(format: "%.1f", milliseconds),
        ]
        if let error { entry["error"] = error }
        guard var line = try? JSONIO.encoder().encode(entry) else { return }
        line.append(0x0A)
        writer.withLock { _ in _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }
    }
}
