import CladeEngine
import CladeGuestProtocol
import CladeStore
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import CladeServer

/// The API's contract without VMs: routing, auth, documentation and bad input, on an empty store.
@Suite(.serialized) struct APIContractTests {
    static let metrics = ServerMetrics.bootstrap()
    static let token = "s3cret-token"

    func withApp(token: String? = Self.token, _ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let home = CladeHome(root: FileManager.default.temporaryDirectory.appendingPathComponent("clade-api-\(UUID().uuidString.prefix(8))"))
        try home.prepare()
        defer { try? FileManager.default.removeItem(at: home.root) }
        let api = CladeAPI(engine: Engine(home: home), limits: APILimits(maxBodyBytes: 4096), metrics: Self.metrics)
        let router = try api.router(token: token, audit: home.state.appendingPathComponent("audit.log"))
        try await Application(router: router).test(.router, body)
    }

    var auth: HTTPFields { [.authorization: "Bearer \(Self.token)", .contentType: "application/json"] }

    func error(_ response: TestResponse) -> String {
        let object = try? JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any]
        return object?["error"] as? String ?? "<no error field: \(String(buffer: response.body))>"
    }

    @Test func everyRouteIsInTheOpenAPIDocument() throws {
        let document = try #require(try JSONSerialization.jsonObject(with: Data(OpenAPIDocument.json.utf8)) as? [String: Any])
        let paths = try #require(document["paths"] as? [String: [String: Any]])
        for route in CladeAPI.routes {
            #expect(paths[route.path]?[route.method.lowercased()] != nil, "\(route.method) \(route.path) is not documented")
        }
        let documented = paths.flatMap { path, methods in methods.keys.map { "\($0.uppercased()) \(path)" } }
        #expect(Set(documented) == Set(CladeAPI.routes.map { "\($0.method) \($0.path)" }), "the document lists routes the router does not serve")
    }

    @Test func theDocumentCarriesTheOneCladeVersion() throws {
        let document = try #require(try JSONSerialization.jsonObject(with: Data(OpenAPIDocument.json.utf8)) as? [String: Any])
        #expect((document["info"] as? [String: Any])?["version"] as? String == CladeVersion.current)
        #expect(cladeVersion == CladeVersion.current)
    }

    @Test func tokensAreRequiredExceptForHealth() async throws {
        try await withApp { client in
            try await client.execute(uri: "/healthz", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/v1/snapshots", method: .get) { response in
                #expect(response.status == .unauthorized)
                #expect(error(response).contains("bearer token"))
            }
            try await client.execute(uri: "/v1/snapshots", method: .get, headers: [.authorization: "Bearer wrong"]) { #expect($0.status == .unauthorized) }
            try await client.execute(uri: "/v1/snapshots", method: .get, headers: [.authorization: "Bearer \(Self.token)x"]) { #expect($0.status == .unauthorized) }
            try await client.execute(uri: "/v1/snapshots", method: .get, headers: auth) { response in
                #expect(response.status == .ok)
                #expect(String(buffer: response.body) == "[]")
            }
            try await client.execute(uri: "/openapi.json", method: .get, headers: auth) { #expect($0.status == .ok) }
            try await client.execute(uri: "/metrics", method: .get, headers: auth) { response in
                #expect(String(buffer: response.body).contains("forkd_snapshots_total"))
            }
        }
    }

    @Test func badInputGetsAFourHundredNamingTheProblem() async throws {
        try await withApp { client in
            let cases: [(String, HTTPRequest.Method, String?, HTTPResponse.Status, String)] = [
                ("/v1/sandboxes", .post, "{not json", .badRequest, "not valid JSON"),
                ("/v1/sandboxes", .post, #"{"snapshot_tag": 7}"#, .badRequest, "snapshot_tag"),
                ("/v1/sandboxes", .post, #"{"n": 2}"#, .badRequest, "snapshot_tag"),
                ("/v1/sandboxes", .post, #"{"snapshot_tag": "py", "n": 0}"#, .badRequest, "between 1 and 100"),
                ("/v1/sandboxes", .post, #"{"snapshot_tag": "py", "n": 1000}"#, .badRequest, "between 1 and 100"),
                ("/v1/sandboxes", .post, #"{"snapshot_tag": "../etc", "n": 1}"#, .badRequest, "not a valid name"),
                ("/v1/sandboxes", .post, #"{"snapshot_tag": "nope", "n": 1}"#, .notFound, "nope"),
                ("/v1/sandboxes", .post, String(repeating: " ", count: 5000) + "{}", .contentTooLarge, "larger than"),
                ("/v1/sandboxes/..%2F..%2Fetc", .get, nil, .badRequest, "12 lowercase hex"),
                ("/v1/sandboxes/0123456789ab", .get, nil, .notFound, "0123456789ab"),
                ("/v1/sandboxes/0123456789ab/exec", .post, #"{"args": "ls"}"#, .badRequest, "args"),
                ("/v1/sandboxes/0123456789ab/exec", .post, #"{"args": ["ls"]}"#, .notFound, "0123456789ab"),
                ("/v1/snapshots/nope", .delete, nil, .notFound, "nope"),
                ("/v1/snapshots/nope/info", .get, nil, .notFound, "nope"),
                ("/v1/jobs", .post, #"{"kind": "format-disk"}"#, .badRequest, "kind"),
                ("/v1/jobs/abc", .get, nil, .notFound, "abc"),
            ]
            for (uri, method, body, status, words) in cases {
                try await client.execute(uri: uri, method: method, headers: auth, body: body.map { ByteBuffer(string: $0) }) { response in
                    #expect(response.status == status, "\(method) \(uri) \(body ?? ""): \(response.status) \(error(response))")
                    #expect(error(response).contains(words), "\(method) \(uri): '\(error(response))' should mention '\(words)'")
                }
            }
        }
    }

    @Test func tokenComparisonIsExact() {
        #expect(BearerTokenMiddleware<BasicRequestContext>.constantTimeEqual(Array("abc".utf8), Array("abc".utf8)))
        #expect(!BearerTokenMiddleware<BasicRequestContext>.constantTimeEqual(Array("abc".utf8), Array("abd".utf8)))
        #expect(!BearerTokenMiddleware<BasicRequestContext>.constantTimeEqual(Array("abc".utf8), Array("abcd".utf8)))
        #expect(!BearerTokenMiddleware<BasicRequestContext>.constantTimeEqual([], Array("a".utf8)))
    }
}
