import CladeStore
import Foundation
import Testing

@testable import CladeServer

/// The names the egress proxy reads: from a ClientHello that OpenSSL (Python's ssl module) writes,
/// and from HTTP request heads.
@Suite struct EgressNamesTests {
    /// The first flight of a real TLS client for `name`, as it would reach the proxy.
    func clientHello(for name: String) throws -> [UInt8] {
        let script = """
            import ssl, sys
            context = ssl.create_default_context()
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = context.wrap_bio(incoming, outgoing, server_hostname=sys.argv[1])
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                pass
            sys.stdout.write(outgoing.read().hex())
            """
        let output = try ExternalCommand("python3", ["-c", script, name]).run()
        try #require(output.status == 0, "python3 ssl: \(output.stderr)")
        let hex = Array(output.stdout.trimmingCharacters(in: .whitespacesAndNewlines).utf8)
        return stride(from: 0, to: hex.count - 1, by: 2).compactMap { UInt8(String(decoding: hex[$0...$0 + 1], as: UTF8.self), radix: 16) }
    }

    @Test func theServerNameOfARealClientHello() throws {
        let hello = try clientHello(for: "Files.PythonHosted.org")
        #expect(EgressNames.read(hello, port: 443) == .name("files.pythonhosted.org"))
        // Every shorter prefix asks for more rather than deciding on part of the hello.
        for cut in [0, 3, 5, 40, hello.count - 1] { #expect(EgressNames.read(Array(hello.prefix(cut)), port: 443) == .incomplete, "\(cut)") }
        // Plain text on the TLS port, and a hello whose lengths lie, are refused.
        if case .unnamed = EgressNames.read(Array("GET / HTTP/1.1\r\n\r\n".utf8), port: 443) {} else { Issue.record("HTTP on 443 was read as TLS") }
        var lying = hello
        lying[6] = 0xff  // the top byte of the ClientHello's length, now larger than its record
        if case .unnamed = EgressNames.read(lying, port: 443) {} else { Issue.record("a hello longer than its record was taken") }
    }

    @Test func aClientHelloWithoutAServerNameHasNoName() throws {
        // Python sends no server_name extension for an address.
        let hello = try clientHello(for: "192.0.2.1")
        if case .unnamed = EgressNames.read(hello, port: 443) {} else { Issue.record("an address was read as a server name") }
    }

    @Test func theHostOfAnHTTPRequest() {
        func read(_ text: String) -> EgressNames.Reading { EgressNames.read(Array(text.utf8), port: 80) }
        #expect(read("GET / HTTP/1.1\r\nUser-Agent: curl\r\nhost: Example.com:8080\r\n\r\n") == .name("example.com"))
        #expect(read("GET / HTTP/1.1\r\nHost: example.com") == .incomplete)
        for refused in ["GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", "\u{16}\u{03}\u{01}junk\r\n\r\n", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"] {
            if case .unnamed = read(refused) {} else { Issue.record("\(refused.debugDescription) was given a name") }
        }
        if case .unnamed = EgressNames.read([UInt8](repeating: 0x41, count: EgressNames.maxBytes), port: 80) {} else { Issue.record("an endless head was waited on") }
    }

    @Test func theProxyNeverConnectsToTheHost() throws {
        let host: Set<String> = ["10.0.0.5"]
        for address in ["127.0.0.1", "169.254.169.254", "0.0.0.0", "224.0.0.1", "10.0.0.5", "::1", "fe80::1", "::ffff:127.0.0.1", "ff02::1"] {
            #expect(EgressPeers.isForbidden(try .init(ipAddress: address, port: 443), hostAddresses: host), "\(address)")
        }
        for address in ["198.51.100.7", "10.0.0.6", "2001:db8::1"] {
            #expect(!EgressPeers.isForbidden(try .init(ipAddress: address, port: 443), hostAddresses: host), "\(address)")
        }
        #expect(try EgressProxy.pinnedNames(["Pypi.Internal=10.1.2.3"]) == ["pypi.internal": "10.1.2.3"])
        for bad in ["pypi.internal", "=10.1.2.3", "pypi.internal=not-an-address", "*.x.org=10.0.0.1"] {
            #expect(throws: (any Error).self, "\(bad)") { try EgressProxy.pinnedNames([bad]) }
        }
    }
}
