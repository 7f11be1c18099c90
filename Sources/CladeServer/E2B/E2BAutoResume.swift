import CladeEngine
import CladeModel
import Foundation

extension E2BService {
    /// Resumes the paused sandbox `id` for a request that just arrived for it (one of its ports,
    /// or envd), when it was created with `autoResume`; it gets its creation timeout again.
    /// True when it is running afterwards. Requests that arrive together resume it once: the
    /// others find it running.
    func wakeForTraffic(_ id: String) async -> Bool {
        guard let state = states.get(id), state.autoResume == true,
            let record = try? await engine.sandboxes.get(id: id)
        else { return false }
        guard record.state == .standby else { return record.state == .running }
        do {
            _ = try await connect(record, timeout: state.timeoutSeconds)
            logger.info("sandbox resumed by traffic", metadata: ["id": "\(id)"])
            return true
        } catch {
            // Another request may have resumed it meanwhile.
            if let now = try? await engine.sandboxes.get(id: id), now.state == .running { return true }
            logger.error("cannot resume a sandbox for its traffic", metadata: ["id": "\(id)", "error": "\(error)"])
            return false
        }
    }
}
