/// What kind of failure an error is, whichever layer raised it. One table (``httpStatus`` and
/// ``exitCode``) turns categories into the daemon's HTTP statuses and the CLI's exit codes, so
/// the two always agree; the README lists it.
public enum ErrorCategory: String, Sendable, CaseIterable {
    /// The request itself is wrong: a bad name, option or value. Fix the request.
    case badInput = "bad_input"
    /// The thing named does not exist.
    case notFound = "not_found"
    /// It exists but is in the wrong state or in the way (a tag taken, a sandbox not running).
    case conflict
    /// The store or a snapshot is damaged; the message names the command that repairs it.
    case damaged
    /// The guest, its agent or the hypervisor failed or did not answer.
    case guestFailure = "guest_failure"
    /// The backend or host cannot do this at all.
    case unsupported
    /// Anything else: a bug or an unexpected host failure.
    case `internal`

    public var httpStatus: Int {
        switch self {
        case .badInput: return 400
        case .notFound: return 404
        case .conflict: return 409
        case .damaged: return 500
        case .guestFailure: return 502
        case .unsupported: return 501
        case .internal: return 500
        }
    }

    /// Distinct exit codes from sysexits(3), so scripts can tell failures apart.
    public var exitCode: Int32 {
        switch self {
        case .badInput: return 64  // EX_USAGE
        case .notFound: return 66  // EX_NOINPUT
        case .conflict: return 75  // EX_TEMPFAIL: retry once the state changes
        case .damaged: return 65  // EX_DATAERR
        case .guestFailure: return 69  // EX_UNAVAILABLE
        case .unsupported: return 78  // EX_CONFIG
        case .internal: return 70  // EX_SOFTWARE
        }
    }
}

/// An error that knows its ``ErrorCategory``.
public protocol CategorizedError: Error {
    var category: ErrorCategory { get }
}
