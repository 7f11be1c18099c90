import CladeGuest
import CladeGuestProtocol
import CladeModel
import Foundation

/// Siblings restored from one snapshot share the kernel's RNG state until the agent reseeds it.
/// The guest's user processes are therefore frozen before the capture and only run again once a
/// restored guest has its own seed (``Forks/pushIdentity(_:)``), so none of them can draw the
/// same random numbers as a sibling.
extension Engine {
    /// Freezes the guest's user processes; false (with a warning) when the guest cannot, e.g. an
    /// agent older than the `freeze` action or a kernel without cgroup v2. The capture goes on
    /// either way: the agent's reseed on restore remains, only the window before it stays open.
    func holdUserProcesses(_ record: SandboxRecord) async -> Bool {
        do {
            let response = try await AgentClient(port: record.agentPort, sandbox: record.id).send(AgentRequest(action: .freeze), timeout: 10)
            if let error = response.error { throw GuestError.agent(error) }
            logger.debug("user processes held for the capture", metadata: ["id": "\(record.id)", "held": "\(response.held ?? 0)"])
            return true
        } catch {
            logger.warning(
                "cannot hold the guest's processes still during the capture; forks may share random numbers drawn before their reseed",
                metadata: ["id": "\(record.id)", "error": "\(error)"])
            return false
        }
    }

    /// Lets processes held by ``holdUserProcesses(_:)`` run again in a guest that continues.
    func releaseUserProcesses(_ record: SandboxRecord) async {
        do {
            let response = try await AgentClient(port: record.agentPort, sandbox: record.id).send(AgentRequest(action: .thaw), timeout: 10)
            if let error = response.error { throw GuestError.agent(error) }
        } catch {
            logger.error("the guest's processes stay frozen after the capture", metadata: ["id": "\(record.id)", "error": "\(error)"])
        }
    }
}
