import CladeEngine
import CladeModel
import CladePack
import Foundation
import Logging

/// E2B templates in clade: a template id names a snapshot (forked on create), or a snapshot in an
/// OCI registry (`HOST/REPO:TAG`), pulled lazily on first use so the sandbox starts before its
/// memory and disk have arrived. An image of that name with no snapshot yet is baked on first use; `base` is built first if there is no such
/// image: Debian with `user` (`/home/user`, bash, passwordless sudo), `python` (python3), pip,
/// curl and git, as E2B documents its own `base`. `httpbin`, which E2B's SDK tests use, is made
/// from `base` (see ``E2BHttpbinTemplate``).
public actor E2BTemplates {
    /// The template SDK users get when they name none.
    public static let baseName = "base"
    public static let basePackages = ["python3", "python-is-python3", "python3-pip", "procps", "sudo", "curl", "git"]
    public static let baseSuite = "bookworm"
    /// Memory and vCPUs of sandboxes started from templates clade bakes itself.
    public static let memoryMiB = 512
    public static let cpus = 1

    let engine: Engine
    let logger: Logger
    private var inFlight: [String: Task<String, Error>] = [:]

    public init(engine: Engine, logger: Logger) {
        self.engine = engine
        self.logger = logger
    }

    /// The snapshot tag to fork for `templateID`, baking (and for `base`, building) it first if needed.
    /// Concurrent first uses of one template wait for the same bake.
    public func snapshotTag(for templateID: String, progress: @escaping @Sendable (String) -> Void = { _ in }) async throws -> String {
        if let existing = inFlight[templateID] { return try await existing.value }
        let engine = engine
        if RegistryReference.namesRegistry(templateID) {
            let reference: RegistryReference
            do { reference = try RegistryReference(parsing: templateID) } catch { throw E2BError(400, "template '\(templateID)': \(error)") }
            let task = Task<String, Error> { try await engine.packs.snapshotForFork(reference, access: .fromEnvironment(for: reference)) }
            inFlight[templateID] = task
            defer { inFlight[templateID] = nil }
            return try await task.value
        }
        if try await engine.snapshots.list().contains(where: { $0.tag == templateID }) { return templateID }
        let logger = logger
        if templateID == E2BHttpbinTemplate.name, try !engine.images.list().contains(where: { $0.name == templateID }) {
            let baseTag = try await snapshotTag(for: Self.baseName, progress: progress)
            let task = Task<String, Error> {
                try await E2BHttpbinTemplate.bake(engine: engine, baseTag: baseTag, logger: logger, progress: progress)
                return templateID
            }
            inFlight[templateID] = task
            defer { inFlight[templateID] = nil }
            return try await task.value
        }
        let task = Task<String, Error> {
            let images = try engine.images.list()
            if !images.contains(where: { $0.name == templateID }) {
                guard templateID == Self.baseName else {
                    throw E2BError(404, "template '\(templateID)' not found: no snapshot or image of that name (see `clade ls --snapshots` and `clade image ls`)")
                }
                logger.notice("building the E2B base image", metadata: ["packages": "\(Self.basePackages)"])
                progress("building image \(Self.baseName) (Debian \(Self.baseSuite) with \(Self.basePackages.joined(separator: ",")))")
                try await engine.images.buildDebian(
                    suite: Self.baseSuite, packages: Self.basePackages, options: ImageIngestOptions(name: Self.baseName))
            }
            logger.notice("baking E2B template", metadata: ["template": "\(templateID)"])
            progress("baking snapshot \(templateID)")
            var boot = BootOptions(image: templateID, memoryMiB: Self.memoryMiB, cpus: Self.cpus)
            boot.readyTimeout = 180
            _ = try await engine.snapshots.bake(BakeOptions(boot: boot, tag: templateID), progress: progress)
            return templateID
        }
        inFlight[templateID] = task
        defer { inFlight[templateID] = nil }
        return try await task.value
    }
}
