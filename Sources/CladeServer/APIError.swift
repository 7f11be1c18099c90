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

    /// Maps the engine's typed errors to statuses: what the caller got wrong is a 4xx, what
    /// the host could not do is a 5xx.
    static func from(_ error: Error) -> APIError {
        switch error {
        case let error as APIError:
            return error
        case let error as ModelError:
            switch error {
            case .notFound: return APIError(.notFound, error.description)
            case .alreadyExists: return APIError(.conflict, error.description)
            default: return APIError(.internalServerError, error.description)
            }
        case let error as EngineError:
            switch error {
            case .invalidOption: return APIError(.badRequest, error.description)
            case .inUse, .notRunning: return APIError(.conflict, error.description)
            case .imageDamaged, .bootFailed: return APIError(.internalServerError, error.description)
            }
        case let error as StoreError:
            if case .invalidName = error { return APIError(.badRequest, error.description) }
            return APIError(.internalServerError, error.description)
        case let error as PackError:
            switch error {
            case .registry: return APIError(.badGateway, error.description)
            case .tagTaken: return APIError(.conflict, error.description)
            case .compression, .archive: return APIError(.internalServerError, error.description)
            default: return APIError(.badRequest, error.description)
            }
        case let error as HTTPError:
            return APIError(error.status, error.body ?? "\(error.status.reasonPhrase)")
        default:
            return APIError(.internalServerError, "\(error)")
        }
    }
}
