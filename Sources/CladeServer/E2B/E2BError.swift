import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// An error of E2B's REST control plane: a status and `{"code": <status>, "message": "..."}`,
/// the body the SDK turns into its own exception types.
struct E2BError: Error, Sendable, CustomStringConvertible {
    var status: Int
    var message: String

    init(_ status: Int, _ message: String) {
        self.status = status
        self.message = message
    }

    var description: String { "\(status): \(message)" }

    var response: Response {
        let body = ConnectRPC.json(["code": status, "message": message])
        return Response(status: .init(code: status), headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    static func from(_ error: Error) -> E2BError {
        let failure = E2BFailure(error)
        return E2BError(failure.status, failure.message)
    }

    static func sandboxNotFound(_ id: String) -> E2BError { E2BError(404, "sandbox \(id) not found") }
}

/// Any error as both halves of E2B's API answer it: an HTTP status for the REST control plane
/// and a Connect code for envd's RPCs, from one table. Clade's own errors get their status from
/// their ``ErrorCategory`` (through ``APIError``); a Connect error keeps its code.
struct E2BFailure {
    var status: Int
    var code: ConnectError.Code
    var message: String

    /// The Connect code for each status clade answers with; any other status is `internal`.
    static let connectCodes: [Int: ConnectError.Code] = [
        400: .invalidArgument, 422: .invalidArgument, 401: .unauthenticated, 403: .permissionDenied, 404: .notFound,
        409: .alreadyExists, 413: .resourceExhausted, 429: .resourceExhausted, 501: .unimplemented, 502: .unavailable,
        503: .unavailable, 504: .deadlineExceeded,
    ]

    init(_ error: Error) {
        switch error {
        case let error as ConnectError:
            self.init(status: Int(error.code.httpStatus.code), code: error.code, message: error.message)
        case let error as E2BError:
            self.init(status: error.status, message: error.message)
        default:
            let api = APIError.from(error)
            self.init(status: api.status.code, message: api.message)
        }
    }

    private init(status: Int, message: String) {
        self.init(status: status, code: Self.connectCodes[status] ?? .internal, message: message)
    }

    private init(status: Int, code: ConnectError.Code, message: String) {
        self.status = status
        self.code = code
        self.message = message
    }
}
