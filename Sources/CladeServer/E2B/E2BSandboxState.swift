import CladeModel
import CladeStore
import Foundation

/// What E2B's API knows of a sandbox that clade's own record does not: the template it came
/// from, its metadata and environment, and its envd access token. Kept in
/// `<home>/state/e2b/<id>.json`; a sandbox without one is not an E2B sandbox and stays out of
/// E2B's listings.
struct E2BSandboxState: Codable, Sendable {
    var sandboxID: String
    var templateID: String
    var alias: String?
    var metadata: [String: String]
    var envVars: [String: String]
    /// Set for `secure` sandboxes: envd requests must carry it as `X-Access-Token`.
    var accessToken: String?
    /// When it started, to the second (the store's dates are ISO 8601 without fractions).
    var startedAt: Date {
        didSet { startedAtSeconds = startedAt.timeIntervalSince1970 }
    }
    /// The same instant to the microsecond, so sandboxes started within one second still list
    /// in the order they started (nil in files written before it was kept).
    var startedAtSeconds: Double?
    var autoPause: Bool
    /// `autoPauseMemory: false`: the timeout's pause keeps only the disk (resume boots it).
    var autoPauseDiskOnly: Bool?
    var allowInternetAccess: Bool?
    /// The egress rules as the SDK gave them (nil: none given, the template's policy).
    var network: E2BNetworkConfig?
    /// Set when `allowPublicTraffic` is false: requests to the sandbox's ports must carry it as
    /// `e2b-traffic-access-token`.
    var trafficAccessToken: String?
    /// `maskRequestHost`: the Host its guest servers see on requests to its public port URLs.
    var maskRequestHost: String?
    /// `autoResume.enabled`: a request for a paused sandbox resumes it.
    var autoResume: Bool?
    /// The timeout it was created with, given again when traffic resumes it.
    var timeoutSeconds: Int?
}

extension E2BSandboxState {
    /// What the sandbox's timeout does to it.
    var timeoutAction: TimeoutAction { autoPause ? (autoPauseDiskOnly == true ? .standbyDiskOnly : .standby) : .kill }

    /// The start time as precisely as it is known.
    var started: Date { startedAtSeconds.map(Date.init(timeIntervalSince1970:)) ?? startedAt }
}

/// The per-sandbox E2B files.
struct E2BStateStore: Sendable {
    let directory: URL

    init(home: CladeHome) {
        directory = home.state.appendingPathComponent("e2b/sandboxes")
    }

    func url(_ id: String) -> URL { directory.appendingPathComponent("\(id).json") }

    func get(_ id: String) -> E2BSandboxState? {
        guard (try? Names.validateSandboxID(id)) != nil else { return nil }
        return try? JSONFiles.read(E2BSandboxState.self, from: url(id))
    }

    func put(_ state: E2BSandboxState) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try JSONFiles.write(state, to: url(state.sandboxID))
    }

    func remove(_ id: String) { try? FileManager.default.removeItem(at: url(id)) }

    /// Removes the files of sandboxes that ended outside E2B (through the CLI, a lifetime, the
    /// reaper): every file not named in `live` and written before `before`. A file written
    /// after `before` may belong to a sandbox created since `live` was read, and stays.
    func prune(keeping live: Set<String>, writtenBefore before: Date) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        for name in names where name.hasSuffix(".json") && !live.contains(String(name.dropLast(5))) {
            let file = directory.appendingPathComponent(name)
            guard let written = (try? file.resourceValues(forKeys: [.contentModificationDateKey]))?.contentModificationDate,
                written < before else { continue }
            try? FileManager.default.removeItem(at: file)
        }
    }

    func all() -> [E2BSandboxState] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasSuffix(".json") }.compactMap { get(String($0.dropLast(5))) }
    }
}
