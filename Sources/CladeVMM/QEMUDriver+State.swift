import CladeStore
import Foundation

extension QEMUDriver {
    /// RAM lives in a file QEMU maps itself, so migration skips it (`x-ignore-shared`) and
    /// only device state (~70 KB) is written: a snapshot takes milliseconds.
    static let ignoreSharedCapability: [String: JSONValue] = [
        "capabilities": .array([.object(["capability": .string("x-ignore-shared"), "state": .bool(true)])])
    ]

    public func captureDeviceState(controlSocket: URL, to file: URL) async throws {
        guard !file.path.contains("'") else { throw VMMError.migrationFailed("the path \(file.path) contains a quote") }
        try await QMPClient.withConnection(socket: controlSocket) { client in
            try await client.execute("stop")
            try await client.execute("migrate-set-capabilities", arguments: Self.ignoreSharedCapability)
            try await client.execute("migrate", arguments: ["uri": .string("exec:cat > '\(file.path)'")])
            try await Self.waitForMigration(client)
        }
    }

    public func restoreDeviceState(controlSocket: URL, from file: URL, ignoreShared: Bool) async throws {
        guard !file.path.contains("'") else { throw VMMError.migrationFailed("the path \(file.path) contains a quote") }
        try await QMPClient.withConnection(socket: controlSocket) { client in
            if ignoreShared { try await client.execute("migrate-set-capabilities", arguments: Self.ignoreSharedCapability) }
            try await client.execute("migrate-incoming", arguments: ["uri": .string("exec:cat '\(file.path)'")])
            try await Self.waitForMigration(client)
            try await client.execute("cont")
        }
    }

    public func pause(controlSocket: URL) async throws {
        try await QMPClient.withConnection(socket: controlSocket) { client in
            _ = try await client.execute("stop")
        }
    }

    public func resume(controlSocket: URL) async throws {
        try await QMPClient.withConnection(socket: controlSocket) { client in
            _ = try await client.execute("cont")
        }
    }

    static func waitForMigration(_ client: QMPClient, timeout: Double = 120) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let info = try await client.execute("query-migrate")
            switch info["status"]?.stringValue {
            case "completed": return
            case "failed", "cancelled":
                throw VMMError.migrationFailed(info["error-desc"]?.stringValue ?? "migration \(info["status"]?.stringValue ?? "failed")")
            default:
                try await Task.sleep(nanoseconds: 2_000_000)
            }
        }
        throw VMMError.migrationFailed("did not finish within \(Int(timeout)) s")
    }
}
