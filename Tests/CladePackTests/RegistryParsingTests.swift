import Foundation
import Testing

@testable import CladePack

@Suite struct RegistryParsingTests {
    @Test func referencesParseHostRepositoryAndTagOrDigest() throws {
        let tagged = try RegistryReference(parsing: "127.0.0.1:5000/team/py:v1")
        #expect(tagged.host == "127.0.0.1:5000")
        #expect(tagged.repository == "team/py")
        #expect(tagged.reference == "v1")
        let latest = try RegistryReference(parsing: "registry.example.com/py")
        #expect(latest.reference == "latest")
        let digest = "sha256:" + String(repeating: "c", count: 64)
        let pinned = try RegistryReference(parsing: "docker://localhost:5000/py@\(digest)")
        #expect(pinned.isDigest && pinned.reference == digest && pinned.host == "localhost:5000")
        for bad in ["py", "host/Upper", "host/a/../b:v1", "host/py@sha256:xyz", "host/py:bad/tag", "/py:v1"] {
            #expect(throws: PackError.self, "\(bad) should be refused") { try RegistryReference(parsing: bad) }
        }
    }

    /// `clade fork X` forks a local tag unless X names a registry; a path-like local name is
    /// refused as a name, never sent to DNS as a host.
    @Test(arguments: [
        ("127.0.0.1:5000/team/py:v1", true), ("registry.example.com/py", true), ("localhost/py", true),
        ("docker://reg/py", true), ("../iso", false), ("./iso", false), ("a/b", false), ("iso", false),
    ])
    func registryReferencesAreToldFromLocalTags(_ text: String, _ isReference: Bool) {
        #expect(RegistryReference.namesRegistry(text) == isReference, "\(text)")
    }

    @Test func challengesParseBearerAndBasic() {
        let bearer = AuthChallenge(header: #"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:team/py:pull,push""#)
        #expect(bearer?.scheme == "bearer")
        #expect(bearer?.parameters["realm"] == "https://auth.example.com/token")
        #expect(bearer?.parameters["service"] == "registry.example.com")
        #expect(bearer?.parameters["scope"] == "repository:team/py:pull,push")
        let basic = AuthChallenge(header: #"Basic realm="clade-test""#)
        #expect(basic?.scheme == "basic" && basic?.parameters["realm"] == "clade-test")
        #expect(AuthChallenge(header: "") == nil)
    }
}
