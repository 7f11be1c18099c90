import ArgumentParser
import CladeServer
import Foundation
import Logging

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the HTTP API (forkd-compatible v1 plus clade's own routes) until SIGTERM or SIGINT.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "TCP address to listen on.") var listen: String = "127.0.0.1:8889"
    @Option(help: "Also (or, with --listen none, only) listen on this unix socket, created mode 0600.") var unix: String?
    @Option(help: "File holding the bearer token every route but /healthz requires.") var tokenFile: String?
    @Option(help: "Forks and branches running at once; more get 503 with Retry-After.") var maxConcurrentForks = 4
    @Option(help: "Proxy requests for <port>-<sandbox id>.DOMAIN to that guest port (no API token needed for them).") var proxyDomain: String?
    @Option(help: "Also serve guest ports on a listener of their own (HOST:PORT), relaying whole connections, so WebSocket upgrades work; needs --proxy-domain.") var proxyListen: String?
    @Option(help: "Serve E2B's API (control plane and envd) on HOST:PORT, for the unmodified E2B SDK.") var e2bListen: String?
    @Option(help: "E2B API keys, one a line (default: <home>/state/e2b/api-keys, created with one random key).") var e2bApiKeyFile: String?
    @Option(help: "Run the egress proxy that enforces host names in network policies (deny:0.0.0.0/0;allow:pypi.org) on this loopback port; without it such policies are refused.") var egressProxyPort: Int?
    @Option(help: "Have the egress proxy resolve NAME to ADDRESS instead of asking DNS (NAME=ADDRESS; repeat for more).") var egressResolve: [String] = []
    @Option(help: "The domain of E2B sandbox hosts, <port>-<sandbox id>.DOMAIN (default: --proxy-domain, else localhost).") var e2bDomain: String?
    @Option(help: "Serve the E2B listener over HTTPS with this PEM certificate (for *.DOMAIN), so clients need only E2B_DOMAIN; needs --e2b-tls-key.") var e2bTlsCert: String?
    @Option(help: "The PEM private key of --e2b-tls-cert.") var e2bTlsKey: String?

    func run() async throws {
        var token: String?
        if let tokenFile {
            guard let data = FileManager.default.contents(atPath: tokenFile) else {
                throw ValidationError("cannot read the token file \(tokenFile)")
            }
            token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard token?.isEmpty == false else { throw ValidationError("the token file \(tokenFile) is empty") }
        }
        guard maxConcurrentForks >= 1 else { throw ValidationError("--max-concurrent-forks must be at least 1") }
        if global.verbose == 0, ProcessInfo.processInfo.environment["CLADE_LOG_LEVEL"] == nil {
            // A daemon logs its requests by default.
            LoggingBootstrap.once(level: .info)
        }
        if let egressProxyPort, !(1...65535).contains(egressProxyPort) { throw ValidationError("--egress-proxy-port must be 1-65535") }
        guard egressResolve.isEmpty || egressProxyPort != nil else { throw ValidationError("--egress-resolve needs --egress-proxy-port") }
        guard (e2bTlsCert == nil) == (e2bTlsKey == nil) else { throw ValidationError("give --e2b-tls-cert and --e2b-tls-key together") }
        guard e2bTlsCert == nil || e2bListen != nil else { throw ValidationError("--e2b-tls-cert needs --e2b-listen") }
        var engine = await global.makeEngine()
        engine.egressProxyPort = egressProxyPort
        var configuration = DaemonConfiguration(
            listen: listen == "none" ? nil : listen, unixSocket: unix, token: token,
            limits: APILimits(concurrentForks: maxConcurrentForks), proxyDomain: proxyDomain, proxyListen: proxyListen)
        configuration.egressProxyPort = egressProxyPort
        configuration.egressPinnedNames = try EgressProxy.pinnedNames(egressResolve)
        var e2b: E2BConfiguration?
        if let e2bListen {
            let keyFile = try e2bApiKeyFile.map { URL(fileURLWithPath: $0) } ?? E2BConfiguration.defaultKeyFile(home: engine.home)
            let domain = e2bDomain ?? proxyDomain ?? "localhost"
            e2b = E2BConfiguration(
                listen: e2bListen, apiKeys: try E2BConfiguration.apiKeys(from: keyFile), domain: domain,
                tls: try e2bTlsCert.map { try E2BEdgeTLS.load(certificate: $0, key: e2bTlsKey ?? "", domain: domain) })
        }
        try await Daemon.run(engine: engine, configuration: configuration, e2b: e2b)
    }
}
