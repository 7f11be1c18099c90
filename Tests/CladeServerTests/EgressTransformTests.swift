import CladeModel
import CladeStore
import Foundation
import NIOCore
import Testing

@testable import CladeServer

/// E2B's `rules` as the policy's transforms, the listener route the egress proxy takes for the
/// daemon's own sandbox hosts, and the interception authority's certificates.
@Suite struct EgressTransformTests {
    func policy(_ network: [String: Any]) throws -> NetworkPolicy {
        try E2BNetworkConfig.read(ProtoJSON(network), allowInternetAccess: nil).policy
    }

    @Test func rulesBecomeTransformsThatSurviveTheRecord() throws {
        let read = try policy([
            "rules": [
                "api.example.com": [["transform": ["headers": ["X-Token": "one", "X-Other": "a"]]], ["transform": ["headers": ["X-Token": "two"]]]],
                "*.internal.example": [["transform": ["headers": ["Authorization": "Bearer t"]]]],
            ],
        ])
        #expect(read.mode == .outbound && read.usesEgressProxy)
        // Later rules for a host override earlier ones; others are kept.
        #expect(read.headers(forHost: "API.example.com") == ["X-Token": "two", "X-Other": "a"])
        #expect(read.headers(forHost: "svc.internal.example") == ["Authorization": "Bearer t"])
        #expect(read.headers(forHost: "example.com") == nil)
        let stored = try JSONDecoder().decode(NetworkPolicy.self, from: try JSONEncoder().encode(read))
        #expect(stored == read)
        // With a deny list the transforms ride along; a rule that sets nothing asks for no proxy.
        let denying = try policy(["denyOut": ["0.0.0.0/0"], "allowOut": ["example.com"], "rules": ["example.com": [["transform": ["headers": ["A": "b"]]]]]])
        #expect(denying.mode == .deny && denying.headers(forHost: "example.com") == ["A": "b"])
        #expect(try policy(["rules": ["example.com": [["transform": [:]]]]]) == .standard)
    }

    @Test func rulesThatCouldNotBeAppliedSafelyAreRefused() {
        let refused: [(network: [String: Any], reason: String)] = [
            (["rules": ["10.0.0.1": [["transform": ["headers": ["A": "b"]]]]]], "not a host name"),
            (["rules": ["example.com": [["transform": ["headers": ["A": 1]]]]]], "string value"),
            (["rules": ["example.com": [["transform": ["headers": ["X-A": "b\r\nX-Injected: 1"]]]]]], "line break"),
            (["rules": ["example.com": [["transform": ["headers": ["Host": "elsewhere.example"]]]]]], "cannot be set"),
            (["rules": ["example.com": [["transform": ["headers": ["Content-Length": "0"]]]]]], "cannot be set"),
            (["rules": ["example.com": [["transform": ["headers": ["Bad Name": "b"]]]]]], "not an HTTP header name"),
            (["rules": ["example.com": [["transform": ["body": "x"]]]]], "only headers"),
            (["rules": ["example.com": ["not a rule"]]], "the only rule"),
            (["rules": "example.com"], "must be an object"),
        ]
        for (network, reason) in refused {
            do {
                _ = try policy(network)
                Issue.record("accepted \(network)")
            } catch {
                #expect("\(error)".contains(reason), "\(network): \(error)")
            }
        }
        // A stored record is checked as a request is.
        let hostile = #"{"mode":"outbound","transforms":[{"host":"example.com","headers":{"X-A":"b\r\nHost: other"}}]}"#
        #expect(throws: (any Error).self) { try JSONDecoder().decode(NetworkPolicy.self, from: Data(hostile.utf8)) }
    }

    @Test func onlySandboxHostsOfTheDomainGoToTheListener() throws {
        let edge = try EgressLocalEdge(domain: "Clade.Test", listen: "0.0.0.0:443", tls: true)
        #expect(edge.address(for: "8080-abc123.clade.test", port: 443)?.ipAddress == "127.0.0.1")
        #expect(edge.address(for: "8080-abc123.clade.test", port: 443)?.port == 443)
        for (host, port) in [
            ("8080-abc123.clade.test", 80), ("api.clade.test", 443), ("clade.test", 443), ("x.8080-abc.clade.test", 443),
            ("8080-abc.clade.test.evil.example", 443), ("abc-8080.clade.test", 443), ("8080-.clade.test", 443),
        ] {
            #expect(edge.address(for: host, port: port) == nil, "\(host):\(port)")
        }
        let plain = try EgressLocalEdge(domain: "clade.test", listen: "127.0.0.5:3000", tls: false)
        #expect(plain.address(for: "49983-abc.clade.test", port: 80)?.port == 3000)
        #expect(plain.address(for: "49983-abc.clade.test", port: 443) == nil)
    }

    @Test func theAuthorityIssuesHostCertificatesThatChainToIt() throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("egress-authority-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: state) }
        let authority = try EgressAuthority.load(state: state)
        let certificate = try authority.hostCertificate(for: "8080-abc.clade.test")
        let leaf = state.appendingPathComponent("leaf.pem")
        try certificate.pem().write(to: leaf, atomically: true, encoding: .utf8)
        let ca = state.appendingPathComponent("egress-ca/ca.pem")
        #expect(try String(contentsOf: ca, encoding: .utf8) == authority.certificatePEM)
        let key = try FileSystem.status(of: state.appendingPathComponent("egress-ca/ca.key"))
        #expect(key.map { $0.mode & 0o077 } == 0, "the authority's key is readable by others")
        // Checked as a TLS client checks a server: chain, purpose and name.
        func verify(_ host: String) throws -> ExternalCommand.Output {
            try ExternalCommand("openssl", ["verify", "-CAfile", ca.path, "-verify_hostname", host, "-purpose", "sslserver", leaf.path]).run()
        }
        let verified = try verify("8080-abc.clade.test")
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        #expect(try verify("other.clade.test").status != 0)
        // Loaded again, the same authority: guests that trust it keep trusting it.
        #expect(try EgressAuthority.load(state: state).certificatePEM == authority.certificatePEM)
        _ = try authority.serverContext(for: "8080-abc.clade.test")
    }
}
