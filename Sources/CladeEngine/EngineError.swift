import CladeStore

/// Failures of lifecycle operations, each with the fix.
public enum EngineError: Error, CustomStringConvertible, Sendable, CategorizedError {
    /// The request is wrong (an option out of range, a missing command).
    case badInput(String)
    /// The sandbox or snapshot is in a state that does not allow this.
    case wrongState(String)
    /// A snapshot or image in the store is damaged; the message says how to repair it.
    case damaged(String)
    /// The guest did not do what was asked (a warm-up command failed, a restore did not finish).
    case guestFailed(String)
    /// This clade cannot act on it (made by another hypervisor or an older clade).
    case unsupported(String)
    /// The host cannot give a new sandbox the isolation its policy needs, and nobody opted out.
    case isolationUnavailable(String)
    case imageDamaged(name: String, missing: String)
    case bootFailed(id: String, reason: String, consoleTail: String)
    case notRunning(id: String, state: String)
    /// A snapshot cannot be removed while these depend on it.
    case inUse(tag: String, sandboxes: [String], snapshots: [String])

    public var category: ErrorCategory {
        switch self {
        case .badInput: return .badInput
        case .wrongState, .notRunning, .inUse: return .conflict
        case .damaged, .imageDamaged: return .damaged
        case .guestFailed, .bootFailed: return .guestFailure
        case .unsupported, .isolationUnavailable: return .unsupported
        }
    }

    public var description: String {
        switch self {
        case .badInput(let message), .wrongState(let message), .damaged(let message), .guestFailed(let message), .unsupported(let message),
            .isolationUnavailable(let message):
            return message
        case .imageDamaged(let name, let missing):
            return "image '\(name)' is damaged: \(missing) is missing from the store; rebuild it with `clade image build` (or `clade image rm \(name)`)"
        case .bootFailed(let id, let reason, let consoleTail):
            return "sandbox \(id) failed to boot: \(reason)\(consoleTail.isEmpty ? "" : "\nlast console lines:\n\(consoleTail)")"
        case .inUse(let tag, let sandboxes, let snapshots):
            var parts: [String] = []
            if !sandboxes.isEmpty { parts.append("running sandboxes \(sandboxes.joined(separator: ", "))") }
            if !snapshots.isEmpty { parts.append("snapshots \(snapshots.joined(separator: ", "))") }
            return "snapshot '\(tag)' is used by \(parts.joined(separator: " and ")); kill them first, or use --force (forks keep running) or --cascade (removes them too)"
        case .notRunning(let id, let state):
            if state == "standby" { return "sandbox \(id) is on standby, not running; bring it back with `clade resume \(id)`" }
            return "sandbox \(id) is \(state), not running; start a new one with `clade boot` or `clade fork`"
        }
    }
}
