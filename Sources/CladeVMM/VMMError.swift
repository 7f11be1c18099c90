import CladeStore
/// Failures starting or controlling a machine, in terms any backend can use.
public enum VMMError: Error, CustomStringConvertible, Sendable {
    /// The backend's program is not installed.
    case backendMissing(backend: String, program: String, fix: String)
    case launchFailed(backend: String, reason: String)
    /// The host port chosen for the agent was taken before the machine bound it.
    case agentPortTaken(port: Int)
    case socketPathTooLong(String)
    case accelerator(String)
    /// Saving or loading machine state failed.
    case stateTransferFailed(backend: String, reason: String)
    /// The machine refused or did not answer a control command.
    case controlFailed(backend: String, operation: String, reason: String)
    /// The backend cannot do this at all.
    case unsupported(backend: String, operation: String)
    /// A disk layer operation failed.
    case diskFailed(operation: String, path: String, reason: String)
    /// The host could not confine a machine (firewall rules, control groups, its uid).
    case confinementFailed(what: String, reason: String, fix: String)

    public var description: String {
        switch self {
        case .backendMissing(_, let program, let fix):
            return "\(program) was not found; \(fix)"
        case .launchFailed(let backend, let reason):
            return "\(backend) failed to start the VM: \(reason)"
        case .agentPortTaken(let port):
            return "the agent port 127.0.0.1:\(port) was taken by another process; retry, or pick another port"
        case .socketPathTooLong(let path):
            return "the socket path \(path) is longer than the 107 bytes Linux allows; use a shorter --home"
        case .accelerator(let reason):
            return reason
        case .stateTransferFailed(let backend, let reason):
            return "\(backend) could not save or load the VM state: \(reason)"
        case .controlFailed(let backend, let operation, let reason):
            return "\(backend) could not \(operation): \(reason)"
        case .unsupported(let backend, let operation):
            return "the \(backend) backend cannot \(operation); use a backend that can (see `clade doctor`)"
        case .diskFailed(let operation, let path, let reason):
            return "could not \(operation) \(path): \(reason)"
        case .confinementFailed(let what, let reason, let fix):
            return "could not \(what): \(reason); \(fix)"
        }
    }
}

extension VMMError: CategorizedError {
    public var category: ErrorCategory {
        switch self {
        case .backendMissing, .unsupported, .accelerator: return .unsupported
        case .socketPathTooLong: return .badInput
        case .agentPortTaken: return .conflict
        case .launchFailed, .stateTransferFailed, .controlFailed: return .guestFailure
        case .diskFailed, .confinementFailed: return .internal
        }
    }
}

extension ChannelError: CategorizedError {
    public var category: ErrorCategory { .guestFailure }
}
