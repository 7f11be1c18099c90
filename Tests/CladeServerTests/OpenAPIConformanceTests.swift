import CladeEngine
import CladeFakeBackend
import CladeModel
import CladeStore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import CladeServer

/// Every route of the API, called for real on an engine whose backend is the in-memory fake,
/// with every response checked against the schema `openapi.json` gives for its status. The
/// document is the one description of the API; this test keeps the code to it.
@Suite(.serialized) struct OpenAPIConformanceTests {
    static let token = "conformance-token"

    /// Calls routes, validates each answer and records which documented operations were reached.
    final class Caller: @unchecked Sendable {
        let client: any TestClientProtocol
        let validator: OpenAPISchemaValidator
        var reached: Set<String> = []

        init(client: any TestClientProtocol, validator: OpenAPISchemaValidator) {
            self.client = client
            self.validator = validator
        }

        @discardableResult
        func call(_ method: HTTPRequest.Method, _ path: String, _ body: String? = nil, expect status: Int) async throws -> JSONValueForTests? {
            var headers: HTTPFields = [.authorization: "Bearer \(OpenAPIConformanceTests.token)"]
            if body != nil { headers[.contentType] = "application/json" }
            let (code, bytes) = try await client.execute(
                uri: path, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }
            ) { response in (Int(response.status.code), Data(response.body.readableBytesView)) }
            #expect(code == status, "\(method) \(path) answered \(code): \(String(decoding: bytes, as: UTF8.self))")
            let content = try validator.responseContent(method: method.rawValue, path: path, status: code)
            if let template = (validator.document["paths"].flatMap { paths -> String? in
                guard case .object(let all) = paths else { return nil }
                return all.keys.first { OpenAPISchemaValidator.matches(template: $0, path: path) }
            }) {
                reached.insert("\(method.rawValue) \(template)")
            }
            guard let content, let schema = content.schema else {
                #expect(bytes.isEmpty || path == "/metrics", "\(method) \(path) sent a body the document does not describe")
                return nil
            }
            switch content.mediaType {
            case "application/octet-stream":
                return .string(String(decoding: bytes, as: UTF8.self))
            case "application/x-ndjson":
                // Each line on its own must match the schema; the lines come back as an array.
                var lines: [JSONValueForTests] = []
                for line in bytes.split(separator: 0x0A) where !line.isEmpty {
                    let value = try JSONDecoder().decode(JSONValueForTests.self, from: Data(line))
                    do {
                        try validator.validate(value, against: schema)
                    } catch {
                        Issue.record("\(method) \(path) → \(code) streamed a line the document does not allow: \(error)")
                    }
                    lines.append(value)
                }
                return .array(lines)
            case "application/json":
                break
            default:
                return nil
            }
            let value = try JSONDecoder().decode(JSONValueForTests.self, from: bytes)
            do {
                try validator.validate(value, against: schema)
            } catch {
                Issue.record("\(method) \(path) → \(code) does not match the document: \(error)")
            }
            return value
        }
    }

    @Test func everyRouteAnswersWhatTheDocumentSays() async throws {
        let fixture = try EngineFixture("openapi")
        defer { fixture.remove() }
        let validator = try OpenAPISchemaValidator(json: OpenAPIDocument.data)
        let api = CladeAPI(engine: fixture.engine, metrics: APIContractTests.metrics)
        let router = try api.router(token: Self.token, audit: fixture.home.state.appendingPathComponent("audit.log"))
        try await Application(router: router).test(.router) { client in
            let caller = Caller(client: client, validator: validator)
            try await caller.call(.get, "/healthz", expect: 200)
            try await caller.call(.get, "/version", expect: 200)
            try await caller.call(.get, "/openapi.json", expect: 200)
            try await caller.call(.get, "/v1/snapshots", expect: 200)
            try await caller.call(.post, "/v1/snapshots", #"{"tag":"base","memory_mib":64}"#, expect: 201)
            try await caller.call(.post, "/v1/snapshots", #"{"tag":"base","memory_mib":64}"#, expect: 409)
            try await caller.call(.post, "/v1/snapshots", #"{"tag":"../x"}"#, expect: 400)
            try await caller.call(.get, "/v1/snapshots/base", expect: 200)
            try await caller.call(.get, "/v1/snapshots/missing", expect: 404)
            try await caller.call(.get, "/v1/snapshots/base/info", expect: 200)
            try await caller.call(.post, "/v1/sandboxes", #"{"snapshot_tag":"missing"}"#, expect: 404)
            try await caller.call(.post, "/v1/sandboxes", #"{"snapshot_tag":"base","n":0}"#, expect: 400)
            let spawned = try await caller.call(.post, "/v1/sandboxes", #"{"snapshot_tag":"base","n":2}"#, expect: 201)
            guard case .array(let sandboxes)? = spawned, let first = sandboxes.first?["id"]?.string, let second = sandboxes.last?["id"]?.string else {
                Issue.record("the spawn answered no sandboxes")
                return
            }
            try await caller.call(.get, "/v1/sandboxes", expect: 200)
            try await caller.call(.get, "/v1/sandboxes/\(first)", expect: 200)
            try await caller.call(.get, "/v1/sandboxes/000000000000", expect: 404)
            let exec = try await caller.call(.post, "/v1/sandboxes/\(first)/exec", #"{"args":["hostname"]}"#, expect: 200)
            #expect(exec?["stdout"]?.string == "\(first)\n", "each sandbox answers with its own identity")
            try await caller.call(.post, "/v1/sandboxes/\(first)/exec", #"{"args":"not a list"}"#, expect: 400)
            try await caller.call(.post, "/v1/sandboxes/\(first)/ping", expect: 200)
            try await caller.call(.put, "/v1/sandboxes/\(first)/files", #"{"path":"/note","content":"aGVsbG8="}"#, expect: 200)
            try await caller.call(.get, "/v1/sandboxes/\(first)/files?path=/note", expect: 200)
            // Processes: a streamed start (JSON lines), a detached one, the table, its controls.
            let streamed = try await caller.call(.post, "/v1/sandboxes/\(first)/processes", #"{"args":["echo","hi"]}"#, expect: 200)
            guard case .array(let events)? = streamed else {
                Issue.record("the process stream was not JSON lines")
                return
            }
            #expect(events.first?["event"]?.string == "started" && events.last?["event"]?.string == "exit")
            #expect(events.contains { $0["event"]?.string == "stdout" && $0["data"]?.string == Data("echo hi\n".utf8).base64EncodedString() })
            try await caller.call(.post, "/v1/sandboxes/\(first)/processes", #"{"command":"sleep 60","tag":"sleeper","detach":true}"#, expect: 201)
            try await caller.call(.post, "/v1/sandboxes/\(first)/processes", #"{"env":{}}"#, expect: 400)
            try await caller.call(.post, "/v1/sandboxes/000000000000/processes", #"{"args":["true"]}"#, expect: 404)
            try await caller.call(.get, "/v1/sandboxes/\(first)/processes", expect: 200)
            try await caller.call(.get, "/v1/sandboxes/\(first)/processes/sleeper/output", expect: 200)
            try await caller.call(.get, "/v1/sandboxes/\(first)/processes/nobody/output", expect: 404)
            try await caller.call(.post, "/v1/sandboxes/\(first)/processes/sleeper/stdin", #"{"text":"x","eof":true}"#, expect: 204)
            try await caller.call(.post, "/v1/sandboxes/\(first)/processes/sleeper/signal", #"{"signal":"TERM"}"#, expect: 204)
            try await caller.call(.post, "/v1/sandboxes/\(first)/processes/nobody/signal", #"{"signal":"TERM"}"#, expect: 404)
            try await caller.call(.post, "/v1/sandboxes/\(first)/processes/sleeper/resize", #"{"rows":40,"cols":100}"#, expect: 204)
            try await caller.call(.post, "/v1/sandboxes/\(first)/processes/sleeper/resize", #"{"rows":"tall"}"#, expect: 400)
            let evaluated = try await caller.call(.post, "/v1/sandboxes/\(first)/eval", #"{"code":"1+1"}"#, expect: 200)
            #expect(evaluated?["exit_code"]?.double == 0)
            try await caller.call(.post, "/v1/sandboxes/\(first)/eval", #"{}"#, expect: 400)
            // Files: write raw bytes, read them back, list, stat, move, remove, watch.
            let uploaded = try await caller.call(.put, "/v1/sandboxes/\(first)/fs/content?path=/work/a.txt", "hello", expect: 200)
            #expect(uploaded?["size"]?.string == "5")
            let downloaded = try await caller.call(.get, "/v1/sandboxes/\(first)/fs/content?path=/work/a.txt", expect: 200)
            #expect(downloaded?.string == "hello")
            try await caller.call(.get, "/v1/sandboxes/\(first)/fs/content?path=/work/none", expect: 404)
            try await caller.call(.get, "/v1/sandboxes/\(first)/fs?path=/work", expect: 200)
            try await caller.call(.get, "/v1/sandboxes/\(first)/fs?path=relative", expect: 400)
            try await caller.call(.get, "/v1/sandboxes/\(first)/fs/stat?path=/work/a.txt", expect: 200)
            try await caller.call(.get, "/v1/sandboxes/\(first)/fs/stat?path=/nowhere", expect: 404)
            try await caller.call(.post, "/v1/sandboxes/\(first)/fs/mkdir", #"{"path":"/work/sub"}"#, expect: 201)
            try await caller.call(.post, "/v1/sandboxes/\(first)/fs/move", #"{"path":"/work/a.txt","destination":"/work/b.txt"}"#, expect: 200)
            try await caller.call(.post, "/v1/sandboxes/\(first)/fs/move", #"{"path":"/work/b.txt"}"#, expect: 400)
            try await caller.call(.delete, "/v1/sandboxes/\(first)/fs?path=/work/b.txt", expect: 204)
            try await caller.call(.delete, "/v1/sandboxes/\(first)/fs?path=/work/b.txt", expect: 404)
            let watched = try await caller.call(.get, "/v1/sandboxes/\(first)/fs/watch?path=/work/sub", expect: 200)
            if case .array(let changes)? = watched { #expect(changes.first?["event"]?.string == "watching") }
            try await caller.call(.post, "/v1/sandboxes/\(first)/branch", #"{"tag":"b1","mode":"diff"}"#, expect: 201)
            try await caller.call(.post, "/v1/sandboxes/\(first)/branch", #"{"tag":"b1","mode":"diff"}"#, expect: 409)
            try await caller.call(.post, "/v1/sandboxes/\(second)/standby", expect: 200)
            try await caller.call(.post, "/v1/sandboxes/\(second)/exec", #"{"args":["true"]}"#, expect: 409)
            try await caller.call(.post, "/v1/sandboxes/\(second)/resume", expect: 200)
            let moved = try await caller.call(.post, "/v1/sandboxes/\(second)/timeout", #"{"timeout_secs":600,"on_timeout":"standby"}"#, expect: 200)
            #expect(moved?["on_timeout"]?.string == "standby")
            try await caller.call(.post, "/v1/sandboxes/\(second)/timeout", #"{"timeout_secs":null}"#, expect: 200)
            try await caller.call(.post, "/v1/sandboxes/\(second)/timeout", #"{"timeout_secs":-5}"#, expect: 400)
            try await caller.call(.post, "/v1/sandboxes/000000000000/timeout", #"{"timeout_secs":5}"#, expect: 404)
            let port = try await caller.call(.post, "/v1/sandboxes/\(first)/ports", #"{"guest_port":8080}"#, expect: 200)
            #expect(port?["guest_port"]?.double == 8080)
            try await caller.call(.post, "/v1/sandboxes/\(first)/ports", #"{"guest_port":70000}"#, expect: 400)
            let layout = fixture.root.appendingPathComponent("packed")
            let job = try await caller.call(.post, "/v1/jobs", #"{"kind":"pack","tag":"base","output":"\#(layout.path)"}"#, expect: 202)
            try await caller.call(.post, "/v1/jobs", #"{"kind":"teleport"}"#, expect: 400)
            try await caller.call(.get, "/v1/jobs", expect: 200)
            if let id = job?["id"]?.string {
                try await caller.call(.get, "/v1/jobs/\(id)", expect: 200)
            }
            try await caller.call(.get, "/v1/jobs/nonexistent", expect: 404)
            try await caller.call(.delete, "/v1/snapshots/base", expect: 409)
            try await caller.call(.delete, "/v1/sandboxes/\(second)", expect: 204)
            try await caller.call(.delete, "/v1/snapshots/base?cascade=true", expect: 204)
            try await caller.call(.get, "/metrics", expect: 200)

            let documented = Set(CladeAPI.routes.map { "\($0.method) \($0.path)" })
            #expect(documented.subtracting(caller.reached).isEmpty, "routes never called: \(documented.subtracting(caller.reached).sorted())")
        }
    }

    /// The check itself catches what it should: a missing required field, a wrong type, a value
    /// outside an enum, a status the document does not list.
    @Test func theValidatorRefusesResponsesThatBreakTheDocument() throws {
        let validator = try OpenAPISchemaValidator(json: OpenAPIDocument.data)
        let sandbox = try #require(try validator.responseSchema(method: "GET", path: "/v1/sandboxes/abc", status: 200))
        func value(_ json: String) throws -> JSONValueForTests { try JSONDecoder().decode(JSONValueForTests.self, from: Data(json.utf8)) }
        let good = #"{"id":"abc","guest_addr":"127.0.0.1:1","created_at_unix":1,"state":"running","pid":7}"#
        try validator.validate(try value(good), against: sandbox)
        for bad in [
            #"{"id":"abc","created_at_unix":1,"state":"running"}"#,
            #"{"id":"abc","guest_addr":"x","created_at_unix":"yesterday","state":"running"}"#,
            #"{"id":"abc","guest_addr":"x","created_at_unix":1,"state":"sleeping"}"#,
            #"{"id":"abc","guest_addr":"x","created_at_unix":1,"state":"running","pid":true}"#,
        ] {
            #expect(throws: OpenAPISchemaValidator.Failure.self, "accepted \(bad)") { try validator.validate(try value(bad), against: sandbox) }
        }
        #expect(throws: OpenAPISchemaValidator.Failure.self) { try validator.responseSchema(method: "GET", path: "/v1/sandboxes/abc", status: 418) }
        #expect(throws: OpenAPISchemaValidator.Failure.self) { try validator.responseSchema(method: "GET", path: "/v2/nothing", status: 200) }
    }
}
