/// Failures of lifecycle operations, each with the fix.
public enum EngineError: Error, CustomStringConvertible, Sendable {
    case invalidOption(String)
    case imageDamaged(name: String, missing: String)
    case bootFailed(id: String, reason: String, consoleTail: String)
    case notRunning(id: String, state: String)

    public var description: String {
        switch self {
        case .invalidOption(let message):
            return message
        case .imageDamaged(let name, let missing):
            return "image '\(name)' is damaged: \(missing) is missing from the store; rebuild it with `clade image build` (or `clade image rm \(name)`)"
        case .bootFailed(let id, let reason, let consoleTail):
            return "sandbox \(id) failed to boot: \(reason)\(consoleTail.isEmpty ? "" : "\nlast console lines:\n\(consoleTail)")"
        case .notRunning(let id, let state):
            if state == "standby" { return "sandbox \(id) is on standby, not running; bring it back with `clade resume \(id)`" }
            return "sandbox \(id) is \(state), not running; start a new one with `clade boot` or `clade fork`"
        }
    }
}
