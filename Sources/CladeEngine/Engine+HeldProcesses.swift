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

extension Engine {
    /// Waits, at most `limit` seconds, until the VM `pid` has been idle for a tenth of a second
    /// (its threads together on a CPU less than 5% of that time).
    ///
    /// What a guest is still doing when it is captured, every fork of the capture does again,
    /// and under emulation pays for as new code: the end of the connection that asked for the
    /// freeze, kernel work queued by the last commands. Captured once the guest idles, a
    /// snapshot's forks translated ~1,400 fewer blocks of guest code each (~7%). Only for
    /// snapshots that will be forked (`bake`, `snapshot`); a branch's pause is not delayed.
    func waitUntilGuestIdles(pid: Int32?, limit: Double = 1) async {
        guard let pid else { return }
        let window: UInt64 = 100_000_000
        let deadline = Date().addingTimeInterval(limit)
        var previous = Self.cpuNanoseconds(of: pid)
        while Date() < deadline, previous != nil {
            try? await Task.sleep(nanoseconds: window)
            guard let now = Self.cpuNanoseconds(of: pid), let before = previous else { return }
            if now - before < window / 20 { return }
            previous = now
        }
    }

    /// The CPU time of every thread of process `pid` so far (`/proc/PID/task/*/schedstat`).
    static func cpuNanoseconds(of pid: Int32) -> UInt64? {
        let tasks = "/proc/\(pid)/task"
        guard let threads = try? FileManager.default.contentsOfDirectory(atPath: tasks) else { return nil }
        var total: UInt64 = 0
        for thread in threads {
            guard let data = FileManager.default.contents(atPath: "\(tasks)/\(thread)/schedstat"),
                  let first = String(decoding: data, as: UTF8.self).split(separator: " ").first, let value = UInt64(first)
            else { continue }
            total += value
        }
        return total
    }
}
