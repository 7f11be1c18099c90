import CladeStore
import Foundation

/// How clade's errors reach containerd: each category as the gRPC code that means the same.
enum ShimErrors {
    static func code(for category: ErrorCategory) -> TTRPCCode {
        switch category {
        case .badInput: return .invalidArgument
        case .notFound: return .notFound
        case .conflict: return .failedPrecondition
        case .damaged: return .dataLoss
        case .guestFailure: return .unavailable
        case .unsupported: return .unimplemented
        case .internal: return .internalError
        }
    }

    /// `error` as a ttrpc status, its message prefixed with what the shim was doing.
    static func translate(_ error: Error, doing what: String) -> TTRPCError {
        if let already = error as? TTRPCError { return already }
        let category = (error as? CategorizedError)?.category ?? .internal
        return .status(code(for: category), "cannot \(what): \(error)")
    }
}
