/// What a journal entry was doing when its clade process died (`operations.kind`).
public enum OperationKind: String, Sendable, CaseIterable {
    case boot, run, bake, snapshot, fork, branch, compact, pack, unpack
    case removeSnapshot = "remove-snapshot"
}

/// What a daemon job does (`jobs.kind`).
public enum JobKind: String, Sendable, CaseIterable, Codable {
    case pack, push, pull
}
