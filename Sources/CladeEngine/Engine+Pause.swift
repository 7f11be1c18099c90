import CladeModel
import CladeStore
import Foundation

extension Engine {
    /// Stops a running sandbox's vCPUs; it keeps its process, memory and endpoint.
    public func pause(id: String) async throws {
        let lock = try FileLock(home: home, .sandbox(id))
        defer { lock.unlock() }
        var record = try runningRecord(id)
        try backend.require(.pause)
        try await machine(id, pid: record.pid).pause()
        record.state = .paused
        try sandboxCatalog.put(record)
    }

    /// Continues a paused sandbox.
    public func unpause(id: String) async throws {
        let lock = try FileLock(home: home, .sandbox(id))
        defer { lock.unlock() }
        var record = try sandboxCatalog.require(id)
        guard record.state == .paused else {
            throw EngineError.wrongState("sandbox \(id) is \(record.state.rawValue), not paused; only a paused sandbox can be unpaused")
        }
        try await machine(id, pid: record.pid).resume()
        record.state = .running
        try sandboxCatalog.put(record)
    }
}
