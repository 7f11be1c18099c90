#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import CladeVMM
import Foundation

/// Which process of a store runs the egress proxy that host names in network policies need.
///
/// The daemon that serves it (`clade serve --egress-proxy-port`) records its port and pid in
/// the store, so the CLI's `fork`, `resume` and `network` on that store can point a sandbox's
/// redirect at it too. Only a live `clade serve` with the flag counts: a record left by a dead
/// daemon names nothing, and policies with names are refused again (they fail closed).
extension Engine {
    struct EgressProxyRegistration: Codable {
        var port: Int
        var pid: Int32
    }

    var egressProxyRegistrationFile: URL { home.state.appendingPathComponent("egress-proxy.json") }

    /// Records that this process serves the egress proxy on `port` (the daemon, as it starts).
    public func registerEgressProxy(port: Int) throws {
        let registration = EgressProxyRegistration(port: port, pid: getpid())
        try FileSystem.writeAtomically(try JSONEncoder().encode(registration), to: egressProxyRegistrationFile, mode: 0o644)
    }

    /// Drops the record, if it is this process's own (the daemon, as it stops).
    public func unregisterEgressProxy() {
        guard readEgressProxyRegistration()?.pid == getpid() else { return }
        try? FileSystem.remove(egressProxyRegistrationFile)
    }

    /// The port of the egress proxy a live `clade serve` of this store runs, if any.
    public func registeredEgressProxyPort() -> Int? {
        guard let registration = readEgressProxyRegistration(),
            ProcessControl.isAlive(registration.pid, marker: "--egress-proxy-port")
        else { return nil }
        return registration.port
    }

    private func readEgressProxyRegistration() -> EgressProxyRegistration? {
        guard let data = FileManager.default.contents(atPath: egressProxyRegistrationFile.path) else { return nil }
        return try? JSONDecoder().decode(EgressProxyRegistration.self, from: data)
    }
}
