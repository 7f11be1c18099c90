/// Failures of lifecycle operations, each with the fix.
public enum EngineError: Error, CustomStringConvertible, Sendable {
    case invalidOption(String)
    case imageDamaged(name: String, missing: String)
    case bootFailed(id: String, reason: String, consoleTail: String)
    case notRunning(id: String, state: String)
    /// A snapshot cannot be removed while these depend on it.
    case inUse(tag: String, sandboxes: [String], snapshots: [String])

    public var description: String {
        switch self {
        case .invalidOption(let message):
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
