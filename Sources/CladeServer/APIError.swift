import CladeEngine
import CladeModel
import CladePack
import CladeStore
import Foundation
import Hummingbird

/// An error as the API reports it: a status and `{"error": "..."}`.
public struct APIError: Error, Sendable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var message: String
    /// Seconds a client should wait before retrying (503s).
    public var retryAfter: Int?

    public init(_ status: HTTPResponse.Status, _ message: String, retryAfter: Int? = nil) {
        self.status = status
        self.message = message
        self.retryAfter = retryAfter
    }

    public var description: String { "\(status.code): \(message)" }

    /// Maps every layer's typed errors to statuses through their ``ErrorCategory`` (the one
    /// table, shared with the CLI's exit codes): what the caller got wrong is a 4xx, what the
    /// host, a guest or a registry could not do is a 5xx.
    static func from(_ error: Error) -> APIError {
        switch error {
        case let error as APIError:
            return error
        case let error as HTTPError:
            return APIError(error.status, error.body ?? "\(error.status.reasonPhrase)")
        case let error as any CategorizedError:
            return APIError(HTTPResponse.Status(code: error.category.httpStatus), "\(error)")
        default:
            return APIError(.internalServerError, "\(error)")
        }
    }
}
