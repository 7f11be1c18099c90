#if canImport(Glibc)
import Glibc
#endif
import CladeModel
import CladePack
import CladeStore
import Foundation

extension RegistryAccess {
    /// How a service (the daemon, a node's containerd shim) reaches registries, from its
    /// environment: `CLADE_INSECURE_REGISTRIES` lists the registries spoken to over plain HTTP
    /// (`host` for any port, or `host:port`, comma-separated), and `CLADE_REGISTRY_USERNAME` and
    /// `CLADE_REGISTRY_PASSWORD` are the credentials, as the CLI reads them.
    public static func fromEnvironment(for reference: RegistryReference, environment: [String: String] = ProcessInfo.processInfo.environment) -> RegistryAccess {
        let listed = (environment["CLADE_INSECURE_REGISTRIES"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let host = reference.host
        let bareHost = host.split(separator: ":").first.map(String.init) ?? host
        let insecure = listed.contains { !$0.isEmpty && ($0 == host || $0 == bareHost) }
        let credentials = environment["CLADE_REGISTRY_USERNAME"].map {
            RegistryCredentials(username: $0, password: environment["CLADE_REGISTRY_PASSWORD"] ?? "")
        }
        return RegistryAccess(insecure: insecure, credentials: credentials)
    }
}

extension Packs {
    /// The local tag a service forks for registry reference `reference`: `node-<digest of the
    /// reference>`, pulled on first use. The pull is lazy where this host can serve memory over
    /// FUSE (root and `/dev/fuse`) unless `lazy` is false: children then start before the
    /// memory has arrived. Concurrent callers (several shims on one node) end with one copy.
    public func snapshotForFork(_ reference: RegistryReference, access: RegistryAccess, lazy: Bool = true) async throws -> String {
        let tag = "node-" + String(Digest.of(Data(reference.description.utf8)).hex.prefix(20))
        let catalog = SnapshotCatalog(home: home)
        if try catalog.get(tag) != nil { return tag }
        let lazyMemory = lazy && geteuid() == 0 && Glibc.access("/dev/fuse", R_OK | W_OK) == 0
        do {
            _ = try await pull(reference, options: UnpackOptions(tag: tag), access: access, lazyMemory: lazyMemory)
        } catch {
            // Another caller may have pulled it meanwhile.
            if (try? catalog.get(tag)) != nil { return tag }
            throw error
        }
        return tag
    }
}
