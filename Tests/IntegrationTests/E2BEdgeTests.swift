#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import Foundation
import Testing

/// The E2B SDK against clade's E2B listener serving HTTPS, configured as against E2B itself:
/// `E2B_DOMAIN` and an API key, nothing else. The listener has a certificate for `*.clade.test`
/// from a test authority and listens on port 443 of a loopback address; a dnsmasq in the
/// scenario's own mount namespace (its /etc/resolv.conf bound over the host's) answers every
/// name under the domain with that address, so the host's resolver is untouched. The same daemon
/// runs the egress proxy, whose transforms the scenario's last part drives.
extension E2BTests {
    static let edgeDomain = "clade.test"

    /// A test certificate authority and a certificate it issued for `*.<domain>`, in `directory`.
    static func issueEdgeCertificate(in directory: URL, domain: String) throws -> (authority: String, certificate: String, key: String) {
        let path = { (name: String) in directory.appendingPathComponent(name).path }
        let extensions = "subjectAltName=DNS:*.\(domain)\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        try extensions.write(toFile: path("edge.ext"), atomically: true, encoding: .utf8)
        for arguments in [
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", path("ca.key"), "-out", path("ca.pem"), "-days", "2", "-subj", "/CN=clade edge test authority"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", path("edge.key"), "-out", path("edge.csr"), "-subj", "/CN=*.\(domain)"],
            ["x509", "-req", "-in", path("edge.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"), "-CAcreateserial", "-out", path("edge.pem"), "-days", "2", "-extfile", path("edge.ext")],
        ] {
            let issued = try ExternalCommand("openssl", arguments).run()
            guard issued.status == 0 else { throw HarnessError("openssl \(arguments[0]): \(issued.stderr)") }
        }
        return (path("ca.pem"), path("edge.pem"), path("edge.key"))
    }

    /// Runs Tests/E2BScenarios/edge.py in a mount namespace whose resolver is a dnsmasq that
    /// sends every name under the domain to `address`.
    func edgeScenario(address: String, key: String, authority: String, directory: URL) throws -> ExternalCommand.Output {
        let python = CLIHarness.packageRoot.appendingPathComponent(".build/e2bclient/bin/python").path
        let script = CLIHarness.packageRoot.appendingPathComponent("Tests/E2BScenarios/edge.py").path
        let resolver = "127.53.\(Int.random(in: 0...255)).\(Int.random(in: 1...254))"
        let resolvConf = directory.appendingPathComponent("resolv.conf")
        try "nameserver \(resolver)\n".write(to: resolvConf, atomically: true, encoding: .utf8)
        let shell = """
            set -e
            mount --bind \(resolvConf.path) /etc/resolv.conf
            dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces --listen-address=\(resolver) \
                --address=/\(Self.edgeDomain)/\(address) --user=root &
            dns=$!
            trap 'kill $dns' EXIT
            trap 'exit 143' TERM INT
            until getent hosts api.\(Self.edgeDomain) >/dev/null; do kill -0 $dns || exit 70; sleep 0.05; done
            \(python) \(script)
            """
        let environment = [
            "E2B_DOMAIN": Self.edgeDomain, "E2B_API_KEY": key, "SSL_CERT_FILE": authority,
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin",
        ]
        return try ExternalCommand("timeout", ["600", "unshare", "--mount", "sh", "-c", shell], environment: environment).run()
    }

    /// Runs from theE2BSDKDrivesCladeThroughEveryScenario, after `clade e2b init` made `base`
    /// and with no other daemon on the store.
    func serveTheEdgeOverTLS() throws {
        guard geteuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/sbin/dnsmasq") else {
            print("E2B edge over TLS: not run (needs root and dnsmasq for the scenario's resolver; .ci/run installs dnsmasq-base)")
            return
        }
        let directory = Self.cli.home.appendingPathComponent("edge")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let issued = try Self.issueEdgeCertificate(in: directory, domain: Self.edgeDomain)
        let key = "e2b_edge_\(UUID().uuidString.prefix(8).lowercased())"
        let keyFile = directory.appendingPathComponent("keys")
        try "\(key)\n".write(to: keyFile, atomically: true, encoding: .utf8)

        // A pair that clients would refuse is refused before the listener starts.
        let mismatched = try Self.cli.run([
            "serve", "--listen", "none", "--e2b-listen", "127.0.0.1:1", "--e2b-api-key-file", keyFile.path, "--e2b-domain", Self.edgeDomain,
            "--e2b-tls-cert", issued.certificate, "--e2b-tls-key", directory.appendingPathComponent("ca.key").path,
        ])
        #expect(mismatched.status != 0 && mismatched.stderr.contains("is not the key of the certificate"), "a key that is not the certificate's: \(mismatched.stderr)")
        let otherDomain = try Self.cli.run([
            "serve", "--listen", "none", "--e2b-listen", "127.0.0.1:1", "--e2b-api-key-file", keyFile.path, "--e2b-domain", "other.test",
            "--e2b-tls-cert", issued.certificate, "--e2b-tls-key", issued.key,
        ])
        #expect(otherDomain.status != 0 && otherDomain.stderr.contains("does not name api.other.test"), "a certificate for another domain: \(otherDomain.stderr)")

        // The transform scenario's echo server: E2B's httpbin template, made from base.
        let httpbin = try Self.cli.run(["e2b", "init", "--template", "httpbin", "--json"])
        #expect(httpbin.status == 0, "clade e2b init --template httpbin: \(httpbin.stderr)")

        let address = "127.0.\(Int.random(in: 1...255)).\(Int.random(in: 2...254))"
        var harness = CLIHarness(home: Self.cli.home)
        // The egress proxy verifies the hosts it connects to, here the listener, against the test authority.
        harness.environment["SSL_CERT_FILE"] = issued.authority
        let daemon = DaemonProcess(harness)
        daemon.extraArguments = [
            "--e2b-listen", "\(address):443", "--e2b-api-key-file", keyFile.path, "--e2b-domain", Self.edgeDomain,
            "--e2b-tls-cert", issued.certificate, "--e2b-tls-key", issued.key, "--egress-proxy-port", "\(Self.egressProxyPort)",
        ]
        daemon.e2bOnlyPort = 443
        daemon.healthCheck = ["-sf", "--cacert", issued.authority, "--resolve", "api.\(Self.edgeDomain):443:\(address)", "https://api.\(Self.edgeDomain)/health"]
        try daemon.start()
        defer { daemon.stop() }
        let plain = try ExternalCommand("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5", "http://\(address):443/health"]).run()
        #expect(plain.stdout != "200", "the TLS listener answered plain HTTP: \(plain.stdout)")
        let run = try edgeScenario(address: address, key: key, authority: issued.authority, directory: directory)
        #expect(run.status == 0 && run.stdout.hasSuffix("all edge scenarios passed\n"), "E2B over TLS by domain, status \(run.status):\n\(run.stdout)\n\(run.stderr)\n\(daemonLog())")
    }
}
