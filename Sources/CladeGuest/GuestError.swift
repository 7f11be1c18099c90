import CladeStore

/// Failures preparing guest artifacts. Messages say what is missing and how to get it.
public enum GuestError: Error, CustomStringConvertible, Sendable {
    case kernelMissing(searched: [String])
    case agentMissing(searched: [String])
    case sourceDirectoryMissing(String)
    case unsupportedPath(String, reason: String)
    case toolMissing(String)
    case agent(String)
    /// The agent refused a request about something in the guest: a missing path or process
    /// (`notFound`), one that exists already, or one the user may not touch.
    case guestRequest(String, kind: String)
    /// The guest's agent predates the protocol version that added `action`.
    case agentLacks(action: String)

    public var description: String {
        switch self {
        case .kernelMissing(let searched):
            return "no guest kernel found (looked in \(searched.joined(separator: ", "))); run scripts/install-deps.sh, or scripts/provision-kernel.sh DIR and set CLADE_KERNEL_DIR=DIR"
        case .agentMissing(let searched):
            return "the clade-agent executable was not found (looked at \(searched.joined(separator: ", "))); build it with `swift build -c release --static-swift-stdlib` or set CLADE_AGENT=PATH"
        case .sourceDirectoryMissing(let path):
            return "the directory \(path) does not exist or is not a directory; pass an existing directory to --from-dir"
        case .unsupportedPath(let path, let reason):
            return "cannot put \(path) into an image: \(reason)"
        case .toolMissing(let tool):
            return "\(tool) is missing; run scripts/install-deps.sh"
        case .agent(let message):
            return message
        case .guestRequest(let message, _):
            return message
        case .agentLacks(let action):
            return "the agent in this guest is older than this clade and has no '\(action)' action; rebake the snapshot (or boot anew) to get the current agent"
        }
    }
}

extension GuestError: CategorizedError {
    public var category: ErrorCategory {
        switch self {
        case .kernelMissing, .agentMissing, .toolMissing: return .unsupported
        case .sourceDirectoryMissing: return .notFound
        case .unsupportedPath: return .badInput
        case .agent: return .guestFailure
        case .agentLacks: return .unsupported
        case .guestRequest(_, let kind):
            switch kind {
            case "not_found": return .notFound
            case "exists": return .conflict
            default: return .badInput
            }
        }
    }
}
