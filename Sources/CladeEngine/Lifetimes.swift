import CladeModel
import CladeStore
import Foundation

/// A sandbox's lifetime as requested at boot or fork: seconds from now, and what happens then.
public struct Lifetime: Sendable, Equatable {
    public var seconds: Double
    public var action: TimeoutAction

    public init(seconds: Double, action: TimeoutAction = .kill) {
        self.seconds = seconds
        self.action = action
    }

    /// Longest lifetime one request may set (30 days); moving the end time again is allowed.
    public static let maxSeconds: Double = 30 * 86_400

    func validate() throws {
        guard seconds > 0, seconds <= Self.maxSeconds else {
            throw EngineError.badInput("--timeout must be between 0 and \(Int(Self.maxSeconds)) seconds (got \(seconds))")
        }
    }

    func apply(to record: inout SandboxRecord, now: Date = Date()) {
        record.expiresAt = now.addingTimeInterval(seconds)
        record.onTimeout = action
    }
}

/// What the reaper did to one sandbox whose end time had passed.
public struct ReapedSandbox: Sendable, Equatable {
    public var id: String
    public var action: TimeoutAction
    /// Set when the action failed (the sandbox is then left as it was, for the next pass).
    public var error: String?
}

/// Lifetimes: end times on sandboxes, moved on request, enforced by whoever comes next (a
/// daemon's timer, or any clade command), so they hold whether or not a daemon runs.
public struct Lifetimes: EngineCapability {
    let engine: Engine

    /// Sets (or with nil clears) a sandbox's end time, counted from now.
    @discardableResult
    public func set(id: String, lifetime: Lifetime?) async throws -> SandboxRecord {
        try lifetime?.validate()
        let lock = try FileLock(home: home, .sandbox(id))
        defer { lock.unlock() }
        var record = try sandboxCatalog.require(id)
        guard record.state != .dead else { throw EngineError.wrongState("sandbox \(id) is dead; it has no lifetime to change") }
        if let lifetime {
            lifetime.apply(to: &record)
        } else {
            record.expiresAt = nil
            record.onTimeout = nil
        }
        try sandboxCatalog.put(record)
        return record
    }

    /// Kills (or puts on standby) every sandbox whose end time has passed. One reaper at a time;
    /// a failure is logged and left for the next pass, never thrown: this runs before every
    /// command and must not stand in its way.
    @discardableResult
    public func reapExpired(now: Date = Date()) async -> [ReapedSandbox] {
        guard let ids = try? sandboxCatalog.idsEnding(atOrBefore: now), !ids.isEmpty else { return [] }
        let due = ids.compactMap { id -> SandboxRecord? in
            // A boot or fork in progress gets its end time only once it is up.
            guard let record = try? sandboxCatalog.get(id), record.state != .booting, let end = record.expiresAt, end <= now else { return nil }
            return record
        }
        guard !due.isEmpty, let lock = try? FileLock.attempt(home: home, .reaper) else { return [] }
        defer { lock.unlock() }
        var reaped: [ReapedSandbox] = []
        for record in due {
            let action = record.onTimeout ?? .kill
            do {
                let toStandby = action == .standby || action == .standbyDiskOnly
                if toStandby, record.state == .running {
                    _ = try await engine.standby.enter(id: record.id, keepMemory: action == .standby)
                    try await set(id: record.id, lifetime: nil)
                } else if toStandby, record.state == .standby {
                    try await set(id: record.id, lifetime: nil)
                } else {
                    try await engine.sandboxes.kill(id: record.id)
                }
                logger.notice("sandbox reached its end time", metadata: ["id": "\(record.id)", "action": "\(action.rawValue)"])
                reaped.append(ReapedSandbox(id: record.id, action: action))
            } catch {
                logger.warning("could not end an expired sandbox", metadata: ["id": "\(record.id)", "error": "\(error)"])
                reaped.append(ReapedSandbox(id: record.id, action: action, error: "\(error)"))
            }
        }
        return reaped
    }
}
