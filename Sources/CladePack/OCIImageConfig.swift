import CladeModel
import CladeStore
import Foundation

/// The parts of an OCI (or Docker) image config blob clade reads.
public struct OCIImageConfig: Decodable, Sendable {
    struct Runtime: Decodable {
        var User: String?
        var Env: [String]?
        var Entrypoint: [String]?
        var Cmd: [String]?
        var WorkingDir: String?
        var ExposedPorts: [String: IgnoredValue]?
        var Labels: [String: String]?
    }
    struct RootFS: Decodable {
        var type: String?
        var diff_ids: [Digest]?
    }

    public var architecture: String?
    public var os: String?
    var config: Runtime?
    var rootfs: RootFS?

    /// Decodes and checks a config blob; `what` names it in errors.
    public static func decode(_ data: Data, what: String) throws -> OCIImageConfig {
        try CanonicalJSON.decode(OCIImageConfig.self, from: data, what: what)
    }

    /// The digests of the layers' uncompressed tar streams, when the config lists them.
    public var diffIDs: [Digest] { rootfs?.diff_ids ?? [] }

    /// The runtime settings as clade records them (the user is resolved later, in the root).
    public var imageConfig: ImageConfig {
        let runtime = config
        return ImageConfig(
            env: runtime?.Env ?? [],
            workingDir: runtime?.WorkingDir.flatMap { $0.isEmpty ? nil : $0 },
            user: runtime?.User.flatMap { $0.isEmpty ? nil : $0 },
            entrypoint: runtime?.Entrypoint ?? [],
            cmd: runtime?.Cmd ?? [],
            exposedPorts: (runtime?.ExposedPorts.map { Array($0.keys) } ?? []).sorted(),
            labels: runtime?.Labels ?? [:])
    }
}
