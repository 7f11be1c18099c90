import CladeModel
import CladeStore
import CladeVMM
import Foundation

extension Sandboxes {
    /// Publishes guest TCP port `guestPort` on the host's loopback and returns where it answers.
    /// Publishing a port twice returns the first publication. The forward lives with the VM
    /// process; resume re-applies it on the same host port. Forks do not inherit it.
    public func publishPort(id: String, guestPort: Int) async throws -> PublishedPort {
        guard (1...65535).contains(guestPort) else { throw EngineError.badInput("the guest port must be between 1 and 65535 (got \(guestPort))") }
        try backend.require(.portForwarding)
        let lock = try FileLock(home: home, .sandbox(id))
        defer { lock.unlock() }
        var record = try runningRecord(id)
        if let existing = record.publishedPorts?.first(where: { $0.guestPort == guestPort }) { return existing }
        let handle = machine(id, pid: record.pid)
        var lastError: Error?
        // A free port can be taken between choosing it and QEMU binding it: try a few.
        for _ in 0..<5 {
            let hostPort = try PortAllocator.freeLoopbackPort()
            do {
                try await handle.forwardPort(host: hostPort, guest: guestPort)
            } catch let error as VMMError {
                guard case .agentPortTaken = error else { throw error }
                lastError = error
                continue
            }
            let published = PublishedPort(guestPort: guestPort, hostPort: hostPort)
            record.publishedPorts = (record.publishedPorts ?? []) + [published]
            try sandboxCatalog.put(record)
            logger.info("published a guest port", metadata: ["id": "\(id)", "guest": "\(guestPort)", "host": "\(hostPort)"])
            return published
        }
        throw EngineError.guestFailed("could not publish guest port \(guestPort) of \(id): \(lastError.map { "\($0)" } ?? "no free host port")")
    }
}
