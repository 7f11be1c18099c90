import CladeModel
import CladeStore
import Foundation

extension Sandboxes {
    /// Changes a running (or paused) sandbox's network policy in place, as E2B's
    /// `PUT /sandboxes/{id}/network` does: the new rules replace the old ones in one packet-filter
    /// transaction, and connections the guest already has stay up (their replies are let through
    /// as before).
    ///
    /// A sandbox started under `none` has its network cut inside its VMM for its whole life, so it
    /// cannot be given another policy; asking for `none` on a sandbox started with a network gives
    /// it the firewall's deny-all instead (`deny:0.0.0.0/0`), which is what it records.
    @discardableResult
    public func setNetwork(id: String, policy: NetworkPolicy) async throws -> SandboxRecord {
        let lock = try FileLock(home: home, .sandbox(id))
        defer { lock.unlock() }
        var record = try sandboxCatalog.require(id)
        guard record.state == .running || record.state == .paused, isAlive(id, pid: record.pid) else {
            throw EngineError.notRunning(id: id, state: record.state.rawValue)
        }
        let current = record.network ?? .standard
        if current.mode == .none {
            guard policy.mode == .none else {
                throw EngineError.wrongState(
                    "sandbox \(id) was started with network 'none', which cuts its network inside the VMM for its whole life; "
                        + "start it with 'deny:0.0.0.0/0' instead to open its network later")
            }
            return record
        }
        let wanted = policy.mode == .none ? NetworkPolicy.denyAll : policy
        try engine.changeNetwork(of: record, to: wanted)
        record.network = wanted
        try sandboxCatalog.put(record)
        logger.info("network policy changed", metadata: ["id": "\(id)", "from": "\(current)", "to": "\(wanted)"])
        return record
    }
}
