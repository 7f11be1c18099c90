import CladeGuestProtocol
import Foundation
import Testing

@Suite struct AgentProtocolTests {
    @Test func execRequestUsesForkdFieldNames() throws {
        let line = try AgentCodec.encodeLine(AgentRequest(action: .exec, args: ["echo", "hi"], timeout: 5))
        #expect(line.last == 0x0A)
        let object = try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any]
        #expect(object?["action"] as? String == "exec")
        #expect(object?["args"] as? [String] == ["echo", "hi"])
        #expect(object?["timeout"] as? Double == 5)
    }

    @Test func decodesAForkdStyleRequest() throws {
        let request = try AgentCodec.decode(AgentRequest.self, from: Array(#"{"action":"exec","args":["ls","/"],"timeout":30}"#.utf8))
        #expect(request.action == "exec")
        #expect(request.args == ["ls", "/"])
        #expect(request.timeout == 30)
        #expect(request.stdin == nil)
    }

    @Test func responseUsesSnakeCaseAndIgnoresUnknownFields() throws {
        let reply = #"{"stdout":"a\n","stderr":"","exit_code":3,"timed_out":true,"future_field":{"x":1}}"#
        let response = try AgentCodec.decode(AgentResponse.self, from: Array(reply.utf8))
        #expect(response.stdout == "a\n")
        #expect(response.exitCode == 3)
        #expect(response.timedOut == true)
        var ping = AgentResponse()
        ping.pong = true
        ping.bootID = "b"
        let encoded = String(decoding: try AgentCodec.encodeLine(ping), as: UTF8.self)
        #expect(encoded == #"{"boot_id":"b","pong":true}"# + "\n")
    }

    @Test func binaryStdinTravelsAsBase64() throws {
        let request = AgentRequest(action: .exec, args: ["cat"], stdinBase64: Data([0, 255, 10]).base64EncodedString())
        let decoded = try AgentCodec.decode(AgentRequest.self, from: try AgentCodec.encodeLine(request).dropLast())
        #expect(decoded.stdinBase64.flatMap { Data(base64Encoded: $0) } == Data([0, 255, 10]))
    }

    @Test func malformedLinesAreErrors() {
        #expect(throws: (any Error).self) { try AgentCodec.decode(AgentRequest.self, from: Array("{".utf8)) }
        #expect(throws: (any Error).self) { try AgentCodec.decode(AgentRequest.self, from: Array(#"{"args":[]}"#.utf8)) }
    }
}
