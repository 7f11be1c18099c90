/// The gRPC status codes ttrpc answers with (google.rpc.Code), the ones the shim uses.
public enum TTRPCCode: Int32, Sendable {
    case ok = 0
    case cancelled = 1
    case unknown = 2
    case invalidArgument = 3
    case deadlineExceeded = 4
    case notFound = 5
    case alreadyExists = 6
    case permissionDenied = 7
    case resourceExhausted = 8
    case failedPrecondition = 9
    case unimplemented = 12
    case internalError = 13
    case unavailable = 14
    case dataLoss = 15
}

/// A failure a ttrpc method answers with, or one met on the connection itself.
public enum TTRPCError: Error, CustomStringConvertible, Sendable {
    /// The method failed; containerd sees `code` and `message`.
    case status(TTRPCCode, String)
    /// A frame announced a payload over ttrpc's 4 MiB limit.
    case frameTooLarge(Int)
    /// The peer closed the connection before answering.
    case closed

    public var description: String {
        switch self {
        case .status(let code, let message): return "ttrpc \(code): \(message)"
        case .frameTooLarge(let size): return "a ttrpc frame of \(size) bytes is over the 4 MiB limit"
        case .closed: return "the ttrpc connection closed before the answer came"
        }
    }
}
