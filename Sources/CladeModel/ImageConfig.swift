import Foundation

/// What an image says about how its processes run: the parts of an OCI image config clade
/// honours. Recorded with the image; `exec` applies it unless a request overrides it.
public struct ImageConfig: Codable, Sendable, Equatable {
    /// `KEY=VALUE` strings, in the image's order.
    public var env: [String]
    public var workingDir: String?
    /// The image's `User` as written (`name`, `uid`, `name:group`, `uid:gid`).
    public var user: String?
    /// `user` resolved through the image's `/etc/passwd` and `/etc/group` when it was built.
    public var uid: UInt32?
    public var gid: UInt32?
    public var entrypoint: [String]
    public var cmd: [String]
    /// `PORT/PROTO` strings, e.g. `8080/tcp`.
    public var exposedPorts: [String]
    public var labels: [String: String]

    public init(
        env: [String] = [], workingDir: String? = nil, user: String? = nil, uid: UInt32? = nil, gid: UInt32? = nil,
        entrypoint: [String] = [], cmd: [String] = [], exposedPorts: [String] = [], labels: [String: String] = [:]
    ) {
        self.env = env
        self.workingDir = workingDir
        self.user = user
        self.uid = uid
        self.gid = gid
        self.entrypoint = entrypoint
        self.cmd = cmd
        self.exposedPorts = exposedPorts
        self.labels = labels
    }

    /// The environment as a dictionary (a later duplicate key wins, as in a shell).
    public var environment: [String: String] {
        var result: [String: String] = [:]
        for entry in env {
            guard let equals = entry.firstIndex(of: "=") else { continue }
            result[String(entry[..<equals])] = String(entry[entry.index(after: equals)...])
        }
        return result
    }

    /// `Entrypoint` followed by `Cmd`: what runs when no command is given.
    public var defaultCommand: [String] { entrypoint + cmd }

    enum CodingKeys: String, CodingKey {
        case env, user, uid, gid, entrypoint, cmd, labels
        case workingDir = "working_dir"
        case exposedPorts = "exposed_ports"
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        env = try container.decodeIfPresent([String].self, forKey: .env) ?? []
        workingDir = try container.decodeIfPresent(String.self, forKey: .workingDir)
        user = try container.decodeIfPresent(String.self, forKey: .user)
        uid = try container.decodeIfPresent(UInt32.self, forKey: .uid)
        gid = try container.decodeIfPresent(UInt32.self, forKey: .gid)
        entrypoint = try container.decodeIfPresent([String].self, forKey: .entrypoint) ?? []
        cmd = try container.decodeIfPresent([String].self, forKey: .cmd) ?? []
        exposedPorts = try container.decodeIfPresent([String].self, forKey: .exposedPorts) ?? []
        labels = try container.decodeIfPresent([String: String].self, forKey: .labels) ?? [:]
    }
}
