import CladeModel
import Foundation

/// The API's name for a job record.
public typealias Job = JobRecord

/// Jobs this daemon runs, written through to the catalog so that they outlive it: a finished
/// job stays readable after a restart, and one that was running is reported `interrupted`.
/// Progress is kept in memory and written at most once a second, plus at every new step.
actor JobRegistry {
    private let catalog: JobCatalog
    private var running: [String: Job] = [:]
    private var lastWrite: [String: Date] = [:]

    init(catalog: JobCatalog) { self.catalog = catalog }

    func start(kind: JobKind) throws -> Job {
        let job = Job(
            id: UUID().uuidString.lowercased().prefix(12).description, kind: kind.rawValue, state: "running", step: "starting", done: 0, total: 0,
            error: nil, result: nil, createdAtUnix: Int64(Date().timeIntervalSince1970))
        try catalog.put(job)
        running[job.id] = job
        lastWrite[job.id] = Date()
        return job
    }

    func progress(_ id: String, step: String, done: Int64, total: Int64) {
        guard var job = running[id] else { return }
        let newStep = job.step != step
        job.step = step
        job.done = done
        job.total = total
        running[id] = job
        if newStep || Date().timeIntervalSince(lastWrite[id] ?? .distantPast) >= 1 {
            try? catalog.put(job)
            lastWrite[id] = Date()
        }
    }

    func finish(_ id: String, result: String?, error: String?) {
        guard var job = running.removeValue(forKey: id) else { return }
        lastWrite[id] = nil
        job.state = error == nil ? "succeeded" : "failed"
        job.result = result
        job.error = error
        if error == nil { job.done = job.total }
        try? catalog.put(job)
    }

    func get(_ id: String) throws -> Job? {
        if let job = running[id] { return job }
        return try catalog.get(id)
    }

    func list() throws -> [Job] {
        try catalog.list().map { running[$0.id] ?? $0 }
    }
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
