import CladeEngine
import CladeModel
import Foundation

/// What a request for a sandbox found when it tried to wake it.
enum E2BWake: Sendable, Equatable {
    /// Running (already, or resumed for this request).
    case running
    /// Paused, and not created with `autoResume`: the request is answered as for a paused sandbox.
    case staysPaused
    /// Created with `autoResume`, but its resume failed; the reason goes back to the caller.
    case failed(String)
}

/// Requests that arrive together for one paused sandbox share one resume: the first starts it,
/// the others wait for its outcome instead of queueing on the sandbox's lock to find it running.
actor E2BWakeGate {
    private var inFlight: [String: Task<E2BWake, Never>] = [:]

    func wake(_ id: String, _ resume: @escaping @Sendable () async -> E2BWake) async -> E2BWake {
        if let running = inFlight[id] { return await running.value }
        let task = Task { await resume() }
        inFlight[id] = task
        let outcome = await task.value
        inFlight[id] = nil
        return outcome
    }
}

extension E2BService {
    /// Resumes the paused sandbox `id` for a request that just arrived for it (one of its ports,
    /// or envd), when it was created with `autoResume`; it gets its creation timeout again.
    func wakeForTraffic(_ id: String) async -> E2BWake {
        guard let state = states.get(id), let record = try? await engine.sandboxes.get(id: id) else { return .staysPaused }
        guard record.state == .standby else { return .running }
        guard state.autoResume == true else { return .staysPaused }
        return await wakes.wake(id) { [self] in
            do {
                // Found running by a resume that ended between the check above and this one.
                if let now = try? await engine.sandboxes.get(id: id), now.state != .standby { return .running }
                _ = try await connect(record, timeout: state.timeoutSeconds)
                logger.info("sandbox resumed by traffic", metadata: ["id": "\(id)"])
                return .running
            } catch {
                if let now = try? await engine.sandboxes.get(id: id), now.state == .running { return .running }
                logger.error("cannot resume a sandbox for its traffic", metadata: ["id": "\(id)", "error": "\(error)"])
                return .failed("\(error)")
            }
        }
    }

    /// The answer for a request whose paused sandbox could not be woken: the resume's own error,
    /// so the caller sees why rather than a bare "paused".
    static func wakeFailure(_ id: String, _ reason: String) -> E2BError {
        E2BError(502, "The sandbox \(id) is paused and auto-resume could not resume it for this request: \(reason)")
    }
}
