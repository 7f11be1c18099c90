import Foundation

/// A long operation (pack, push, pull) the API runs in the background, polled by id.
public struct Job: Codable, Sendable {
    public var id: String
    public var kind: String
    /// `running`, `succeeded` or `failed`.
    public var state: String
    public var step: String
    public var done: Int64
    public var total: Int64
    public var error: String?
    /// The operation's report once it succeeded.
    public var result: String?
    public var createdAtUnix: Int64

    enum CodingKeys: String, CodingKey {
        case id, kind, state, step, done, total, error, result
        case createdAtUnix = "created_at_unix"
    }
}

/// Jobs of this daemon's lifetime (they are not resumed across restarts: a pull resumes from its
/// download cache when it is started again; a pack is rewritten).
actor JobRegistry {
    private var jobs: [String: Job] = [:]

    func start(kind: String) -> Job {
        let job = Job(
            id: UUID().uuidString.lowercased().prefix(12).description, kind: kind, state: "running", step: "starting", done: 0, total: 0,
            error: nil, result: nil, createdAtUnix: Int64(Date().timeIntervalSince1970))
        jobs[job.id] = job
        return job
    }

    func progress(_ id: String, step: String, done: Int64, total: Int64) {
        jobs[id]?.step = step
        jobs[id]?.done = done
        jobs[id]?.total = total
    }

    func finish(_ id: String, result: String?, error: String?) {
        jobs[id]?.state = error == nil ? "succeeded" : "failed"
        jobs[id]?.result = result
        jobs[id]?.error = error
        if error == nil, let total = jobs[id]?.total { jobs[id]?.done = total }
    }

    func get(_ id: String) -> Job? { jobs[id] }
    func list() -> [Job] { jobs.values.sorted { $0.createdAtUnix < $1.createdAtUnix } }
}

/// A counting limit on concurrent forks and branches; beyond it requests get 503.
actor OperationSlots {
    private let capacity: Int
    private var inUse = 0

    init(capacity: Int) { self.capacity = capacity }

    func acquire() -> Bool {
        guard inUse < capacity else { return false }
        inUse += 1
        return true
    }

    func release() { inUse = max(0, inUse - 1) }
}
