import CladeEngine
import CladePack

/// How a node's shim reaches registries, from containerd's environment (the shim inherits it):
/// `CLADE_INSECURE_REGISTRIES` lists the registries spoken to over plain HTTP (`host` for any
/// port, or `host:port`, comma-separated), and `CLADE_REGISTRY_USERNAME` and
/// `CLADE_REGISTRY_PASSWORD` are the credentials, as the CLI reads them.
enum NodeRegistryAccess {
    static func access(for reference: RegistryReference, environment: [String: String]) -> RegistryAccess {
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
