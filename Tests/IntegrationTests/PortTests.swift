import CladeStore
import Foundation
import Testing

/// Published guest ports with a real VM: a web server started in the guest as a background
/// process answers on the host, and again on the same host port after standby and resume.
@Suite(.serialized) struct PortIntegrationTests {
    @Test func aGuestWebServerIsReachableOnThePublishedPort() throws {
        let cli = CLIHarness(home: CLIHarness.privateHome("ports"))
        let boot = try cli.run(["boot"])
        try #require(boot.status == 0, "\(boot.stderr)")
        let id = boot.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? cli.run(["kill", id]) }
        let serve = try cli.run(["exec", id, "--", "sh", "-c", "echo served-from-$(hostname) > /var/www/index.html; httpd -p 8080 -h /var/www"])
        try #require(serve.status == 0, "\(serve.stderr)")
        let publish = try cli.run(["port", id, "8080"])
        try #require(publish.status == 0, "\(publish.stderr)")
        let address = publish.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(address.hasPrefix("127.0.0.1:"))
        #expect(try ExternalCommand("curl", ["-sf", "http://\(address)/"]).check().stdout == "served-from-\(id)\n")
        #expect(try cli.run(["port", id, "8080"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines) == address, "publishing again gives the same port")

        #expect(try cli.run(["standby", id]).status == 0)
        #expect(try cli.run(["resume", id]).status == 0)
        #expect(try ExternalCommand("curl", ["-sf", "http://\(address)/"]).check().stdout == "served-from-\(id)\n", "the port is back after resume")
        #expect(try cli.run(["port", id, "99999"]).status == 64)
    }
}
