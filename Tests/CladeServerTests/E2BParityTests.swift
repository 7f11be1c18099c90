import CladeModel
import CladeStore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Testing

@testable import CladeServer

/// The pure parts of clade's answers to E2B's own SDK suite: signed file URLs, upload
/// metadata headers, RFC 3339 times as Python writes them.
@Suite struct E2BParityTests {
    func request(_ method: HTTPRequest.Method, _ target: String) -> Request {
        Request(head: HTTPRequest(method: method, scheme: "http", authority: "localhost", path: target), body: .init(buffer: ByteBuffer()))
    }

    @Test func signaturesMatchTheSDKs() {
        // Values from the SDK's own algorithm (hashlib.sha256, base64 without padding).
        #expect(E2BSignedURL.signature(path: "/home/user/a.txt", operation: "read", user: "user", token: "tok123", expiration: nil)
            == "v1_HB2bgZ+RgifWQVkD4WDT8wNBFTVrggZWSRD5EqI0H/0")
        #expect(E2BSignedURL.signature(path: "/home/user/a.txt", operation: "write", user: "", token: "tok123", expiration: 1_700_000_000)
            == "v1_js9/4f5ea8GZ42Fpws+LDWeYh0p1HcmG8oA/zBD7lQ4")
    }

    @Test func aSignedURLIsCheckedForItsOperationTokenAndExpiry() {
        func url(_ signature: String, _ expiration: Int?) -> String {
            var query = "/files?path=a.txt&username=user&signature=\(signature.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")"
            if let expiration { query += "&signature_expiration=\(expiration)" }
            return query
        }
        let future = Int(Date().timeIntervalSince1970) + 120
        let good = E2BSignedURL.signature(path: "a.txt", operation: "read", user: "user", token: "t", expiration: future)
        #expect(E2BSignedURL.check(request(.get, url(good, future)), token: "t") == .valid)
        #expect(E2BSignedURL.check(request(.post, url(good, future)), token: "t") == .invalid, "a read signature does not allow a write")
        #expect(E2BSignedURL.check(request(.get, url(good, future)), token: "other") == .invalid)
        #expect(E2BSignedURL.check(request(.get, url(good, future + 1)), token: "t") == .invalid, "the expiry is signed")
        let past = Int(Date().timeIntervalSince1970) - 120
        let expired = E2BSignedURL.signature(path: "a.txt", operation: "read", user: "user", token: "t", expiration: past)
        #expect(E2BSignedURL.check(request(.get, url(expired, past)), token: "t") == .expired)
        #expect(E2BSignedURL.check(request(.get, "/files?path=a.txt"), token: "t") == nil)
    }

    @Test func uploadMetadataComesFromItsHeadersLowercased() throws {
        var headers = HTTPFields()
        headers[HTTPField.Name("X-Metadata-Author")!] = "mish"
        headers[HTTPField.Name("x-metadata-purpose")!] = "upload"
        headers[.contentType] = "text/plain"
        #expect(try E2BService.uploadMetadata(headers) == ["author": "mish", "purpose": "upload"])
        var bad = HTTPFields()
        bad[HTTPField.Name("X-Metadata-Key")!] = "caf\u{e9}"
        #expect(throws: E2BError.self) { try E2BService.uploadMetadata(bad) }
    }

    @Test func timesParseAsPythonWritesThem() throws {
        let base = try #require(ProtoJSON.date(rfc3339: "2026-12-05T06:55:08Z"))
        #expect(ProtoJSON.date(rfc3339: "2026-12-05T06:55:08.250000+00:00").map { $0.timeIntervalSince(base) } == 0.25)
        #expect(ProtoJSON.date(rfc3339: "2026-12-05T08:55:08+02:00") == base)
        #expect(ProtoJSON.date(rfc3339: "2026-12-05T06:55:08") == base, "no offset reads as UTC")
        #expect(ProtoJSON.date(rfc3339: "yesterday") == nil)
    }
}

/// E2B's egress settings as clade's network policy.
@Suite struct E2BNetworkConfigTests {
    func read(_ network: [String: Any]?, internet: Bool? = nil) throws -> (config: E2BNetworkConfig, policy: NetworkPolicy) {
        try E2BNetworkConfig.read(network.map(ProtoJSON.init), allowInternetAccess: internet)
    }

    @Test func denyAndAllowListsBecomeADenyPolicy() throws {
        let policy = try read(["denyOut": ["0.0.0.0/0"], "allowOut": ["1.1.1.1", "8.8.8.0/24"]]).policy
        #expect(policy.description == "deny:0.0.0.0/0;allow:1.1.1.1/32,8.8.8.0/24")
        // allowOut alone restricts nothing, as in E2B; no internet is a deny of all traffic.
        #expect(try read(["allowOut": ["1.1.1.1"]]).policy == .standard)
        #expect(try read(nil, internet: false).policy == .denyAll)
        #expect(try read([:]).policy == .standard)
        #expect(try read(["allowPublicTraffic": false]).policy == .standard)
    }

    @Test func hostNamesInAllowOutBecomeDomainRules() throws {
        let policy = try read(["denyOut": ["0.0.0.0/0"], "allowOut": ["1.1.1.1", "Example.COM", "*.pythonhosted.org"]]).policy
        #expect(policy.description == "deny:0.0.0.0/0;allow:1.1.1.1/32,example.com,*.pythonhosted.org")
        #expect(policy.usesEgressProxy && policy.admits(name: "files.pythonhosted.org") && !policy.admits(name: "pythonhosted.org"))
        // Without a deny, names restrict nothing either.
        #expect(try read(["allowOut": ["example.com"]]).policy == .standard)
    }

    @Test func whatTheProxyCannotEnforceIsRefused() {
        for network: [String: Any] in [
            ["allowOut": ["exa_mple..com"], "denyOut": ["0.0.0.0/0"]], ["denyOut": ["*.example.com"]], ["denyOut": ["2001:db8::1"]],
            ["denyOut": ["8.8.8.8/33"]], ["rules": ["api.example.com": [["redirect": [:]]]]], ["egressProxy": ["address": "socks5://10.0.0.1:1080"]],
        ] {
            #expect(throws: E2BError.self, "\(network)") { try read(network) }
        }
    }

    /// A host mask is a host with an optional port; anything that could add a header, a path or
    /// a second request to the forwarded one is refused.
    @Test func aHostMaskIsAHostAndPortOnly() throws {
        func mask(_ text: String) throws -> String? {
            try E2BNetworkConfig.hostMask(ProtoJSON(["maskRequestHost": text]))
        }
        #expect(try mask("custom-host.example.com:${PORT}") == "custom-host.example.com:${PORT}")
        #expect(try mask("localhost") == "localhost")
        #expect(try mask("") == nil)
        #expect(GuestPortProxyMiddleware<E2BContext>.host(masking: "${PORT}-app.example.com:${PORT}", port: 8080) == "8080-app.example.com:8080")
        for hostile in ["a.example.com\r\nX-Injected: 1", "a.example.com/path", "a b", ":80", "user@host", String(repeating: "a", count: 300)] {
            #expect(throws: E2BError.self, "\(hostile)") { try mask(hostile) }
        }
    }
}
