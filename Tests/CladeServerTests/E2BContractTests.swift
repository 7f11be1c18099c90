import CladeEngine
import CladeGuestProtocol
import CladeStore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@testable import CladeServer

/// The E2B listener without VMs: Connect framing, proto3 JSON, the SDK's query formats, uploads,
/// and the gateway's authentication and errors on an empty store. The SDK itself drives real
/// VMs in IntegrationTests/E2BTests.
@Suite struct E2BContractTests {
    static let key = "e2b_unit_key"
    static let apiKeyHeader = HTTPField.Name("X-API-Key")!
    static let sandboxHeader = HTTPField.Name("E2b-Sandbox-Id")!

    func withApp(_ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        try await withApp { client, _ in try await body(client) }
    }

    /// The listener on an empty store of its own, which `body` may also look into.
    func withApp(_ body: @Sendable (any TestClientProtocol, CladeHome) async throws -> Void) async throws {
        let home = CladeHome(root: FileManager.default.temporaryDirectory.appendingPathComponent("clade-e2b-\(UUID().uuidString.prefix(8))"))
        try home.prepare()
        defer { try? FileManager.default.removeItem(at: home.root) }
        let service = E2BService(engine: Engine(home: home), configuration: E2BConfiguration(listen: "127.0.0.1:1", apiKeys: [Self.key], domain: "sb.test"), logger: .init(label: "test"))
        try await Application(router: service.router()).test(.router) { client in try await body(client, home) }
    }

    func json(_ buffer: ByteBuffer) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)) as? [String: Any]) ?? [:]
    }

    @Test func envelopesCarryTheLengthAndTheEndOfStreamError() throws {
        var message = ConnectRPC.envelope(["event": ["start": ["pid": 7]]])
        #expect(message.readInteger(as: UInt8.self) == 0)
        let length = message.readInteger(as: UInt32.self)
        #expect(length.map(Int.init) == message.readableBytes)
        var end = ConnectRPC.endOfStream(ConnectError(.deadlineExceeded, "late"))
        #expect(end.readInteger(as: UInt8.self) == ConnectRPC.endStreamFlag)
        _ = end.readInteger(as: UInt32.self)
        let body = json(end)
        #expect((body["error"] as? [String: Any])?["code"] as? String == "deadline_exceeded")
        var clean = ConnectRPC.endOfStream(nil)
        _ = clean.readBytes(length: 5)
        #expect(String(buffer: clean) == "{}")
    }

    @Test func protoJSONReadsCamelAndSnakeNamesEnumsAndBytes() {
        let message = ProtoJSON(["watcherId": "w1", "include_entry": true, "size": "12", "signal": 9, "stdin": Data("hi".utf8).base64EncodedString()])
        #expect(message.string("watcherId") == "w1" && message.bool("includeEntry") && message.int("size") == 12)
        #expect(message.enumName("signal", names: [9: "SIGNAL_SIGKILL"]) == "SIGNAL_SIGKILL")
        #expect(message.bytes("stdin") == Data("hi".utf8))
        #expect(ProtoJSON(["data": "_-8"]).bytes("data") == Data([0xFF, 0xEF]))
    }

    @Test func connectCodesMapToTheStatusesOfTheSpec() {
        #expect(ConnectError.Code.notFound.httpStatus.code == 404)
        #expect(ConnectError.Code.unauthenticated.httpStatus.code == 401)
        #expect(ConnectError.Code.deadlineExceeded.httpStatus.code == 504)
        #expect(ConnectError.Code.canceled.httpStatus.code == 499)
        #expect(ConnectRPC.connectError(from: APIError(.conflict, "exists")).code == .alreadyExists)
    }

    @Test func theSDKsMetadataQueryIsDecodedTwice() {
        // urlencode({quote(k): quote(v)}) as the SDK sends it, after the URL's own decoding.
        #expect(E2BService.metadataFilter("team=a%20b&env=prod%26test") == ["team": "a b", "env": "prod&test"])
        #expect(E2BService.metadataFilter(nil).isEmpty)
    }

    @Test func pathsResolveFromTheUsersHomeAndPermissionsReadLikeLs() throws {
        #expect(try E2BService.resolve("notes/a.txt", user: nil) == "/home/user/notes/a.txt")
        #expect(try E2BService.resolve("~/x", user: "root") == "/root/x")
        #expect(try E2BService.resolve("/etc/hosts", user: "user") == "/etc/hosts")
        let entry = FileEntryFixture.directory
        #expect(E2BService.permissions(entry) == "drwxr-x---")
    }

    @Test func multipartFilePartsAreSplitByTheirBoundary() throws {
        let body = Data("--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/tmp/a.txt\"\r\nContent-Type: application/octet-stream\r\n\r\nline1\r\nline2\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b\"\r\n\r\n\r\n--XyZ--\r\n".utf8)
        #expect(E2BService.boundary("multipart/form-data; boundary=\"XyZ\"") == "XyZ")
        let parts = try E2BService.multipartFiles(body, boundary: "XyZ")
        #expect(parts.count == 2)
        #expect(parts[0].filename == "/tmp/a.txt" && parts[0].content == Data("line1\r\nline2".utf8))
        #expect(parts[1].filename == "b" && parts[1].content.isEmpty)
        #expect(throws: E2BError.self) { try E2BService.multipartFiles(Data("--XyZ\r\nbroken".utf8), boundary: "XyZ") }
    }

    @Test func gzipUploadsInflateAndTruncatedOnesFail() throws {
        let original = Data(String(repeating: "clade ", count: 50_000).utf8)
        let compressed = try gzipped(original)
        let inflater = try GzipInflater()
        var out = Data()
        var offset = 0
        while offset < compressed.count {
            let end = min(offset + 1000, compressed.count)
            out += try inflater.inflate(compressed.subdata(in: offset..<end))
            offset = end
        }
        #expect(try inflater.finish() == nil)
        #expect(out == original)
        let truncated = try GzipInflater()
        _ = try truncated.inflate(compressed.prefix(compressed.count / 2))
        #expect(throws: E2BError.self) { try truncated.finish() }
        #expect(throws: E2BError.self) { try GzipInflater().inflate(Data("not gzip at all".utf8)) }
    }

    @Test func theControlPlaneWantsAnAPIKeyAndAnswersInE2BsErrorShape() async throws {
        try await withApp { client in
            try await client.execute(uri: "/v2/sandboxes", method: .get) { response in
                #expect(response.status == .unauthorized)
                #expect(json(response.body)["code"] as? Int == 401)
            }
            try await client.execute(uri: "/v2/sandboxes", method: .get, headers: [Self.apiKeyHeader: "wrong"]) { response in
                #expect(response.status == .unauthorized)
            }
            try await client.execute(uri: "/v2/sandboxes", method: .get, headers: [Self.apiKeyHeader: Self.key]) { response in
                #expect(response.status == .ok && String(buffer: response.body) == "[]")
            }
            try await client.execute(uri: "/sandboxes/0123456789ab", method: .get, headers: [Self.apiKeyHeader: Self.key]) { response in
                #expect(response.status == .notFound && json(response.body)["message"] as? String == "sandbox 0123456789ab not found")
            }
            try await client.execute(uri: "/sandboxes/..%2Fetc", method: .delete, headers: [Self.apiKeyHeader: Self.key]) { response in
                #expect(response.status == .notFound)
            }
            try await client.execute(
                uri: "/v2/sandboxes", method: .post, headers: [Self.apiKeyHeader: Self.key, .contentType: "application/json"],
                body: ByteBuffer(string: "{\"timeout\": 5}")
            ) { response in
                #expect(response.status == .badRequest && (json(response.body)["message"] as? String ?? "").contains("templateID"))
            }
            try await client.execute(
                uri: "/v2/sandboxes", method: .post, headers: [Self.apiKeyHeader: Self.key],
                body: ByteBuffer(string: "{\"templateID\": \"no-such-template\"}")
            ) { response in
                #expect(response.status == .notFound)
            }
            try await client.execute(uri: "/v2/sandboxes?state=sleeping", method: .get, headers: [Self.apiKeyHeader: Self.key]) { response in
                #expect(response.status == .badRequest)
            }
        }
    }

    /// A sandbox that ended outside E2B (the CLI, a lifetime, the reaper) leaves its E2B file;
    /// the next listing removes it, but not a file written since the listing read the catalog.
    @Test func listingPrunesTheFilesOfSandboxesThatEndedElsewhere() async throws {
        try await withApp { client, home in
            let states = E2BStateStore(home: home)
            let ended = E2BSandboxState(
                sandboxID: "0123456789ab", templateID: "base", metadata: [:], envVars: [:], startedAt: Date(), autoPause: false)
            try states.put(ended)
            try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-60)], ofItemAtPath: states.url(ended.sandboxID).path)
            var arriving = ended
            arriving.sandboxID = "ba9876543210"
            try states.put(arriving)
            try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(60)], ofItemAtPath: states.url(arriving.sandboxID).path)
            try await client.execute(uri: "/v2/sandboxes", method: .get, headers: [Self.apiKeyHeader: Self.key]) { response in
                #expect(response.status == .ok && String(buffer: response.body) == "[]")
            }
            #expect(states.get(ended.sandboxID) == nil, "the ended sandbox's E2B file is still there")
            #expect(states.get(arriving.sandboxID) != nil, "a file written after the listing began was removed")
        }
    }

    @Test func envdRequestsNameALiveSandbox() async throws {
        try await withApp { client in
            try await client.execute(uri: "/process.Process/List", method: .post, headers: [.contentType: "application/json"], body: ByteBuffer(string: "{}")) { response in
                #expect(response.status == .badRequest)
            }
            try await client.execute(
                uri: "/process.Process/List", method: .post,
                headers: [.contentType: "application/json", Self.sandboxHeader: "0123456789ab"], body: ByteBuffer(string: "{}")
            ) { response in
                // The SDK reads a 502 "was not found" as "the sandbox is gone".
                #expect(response.status == .badGateway && (json(response.body)["message"] as? String ?? "").contains("was not found"))
            }
            try await client.execute(uri: "/health", method: .get) { response in #expect(response.status == .ok) }
        }
    }
}

enum FileEntryFixture {
    static let directory = FileEntry(name: "d", path: "/d", type: .directory, size: 0, mode: 0o750, uid: 0, gid: 0, modifiedAt: 0, symlinkTarget: nil)
}

/// `gzip -c` of `data` (binary-safe, unlike a string capture).
func gzipped(_ data: Data) throws -> Data {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/gzip")
    process.arguments = ["-c"]
    let input = Pipe()
    let output = Pipe()
    process.standardInput = input
    process.standardOutput = output
    try process.run()
    let writer = Thread { input.fileHandleForWriting.write(data); try? input.fileHandleForWriting.close() }
    writer.start()
    let result = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return result
}
