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

    @Test func theDaemonProxiesAPreviewHostToTheGuestPort() throws {
        let home = CLIHarness.privateHome("proxy")
        let cli = CLIHarness(home: home)
        let daemon = DaemonProcess(home: home)
        daemon.extraArguments = ["--proxy-domain", "clade.test"]
        try daemon.start()
        defer { daemon.stop() }
        let boot = try cli.run(["boot"])
        try #require(boot.status == 0, "\(boot.stderr)")
        let id = boot.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? cli.run(["kill", id]) }
        try #require(try cli.run(["exec", id, "--", "sh", "-c", "echo preview-$(hostname) > /var/www/index.html; httpd -p 8080 -h /var/www"]).status == 0)
        func get(_ host: String) throws -> String {
            try ExternalCommand("curl", ["-s", "-H", "Host: \(host)", "http://127.0.0.1:\(daemon.port)/"]).check().stdout
        }
        // No API token: the preview host is the sandbox's own traffic.
        #expect(try get("8080-\(id).clade.test") == "preview-\(id)\n")
        #expect(try get("8080-\(id).clade.test:\(daemon.port)") == "preview-\(id)\n")
        #expect(try get("8081-\(id).clade.test").contains("does not answer"))
        #expect(try get("8080-000000000000.clade.test").contains("no sandbox"))
        // Every other host is the API, which still wants its token.
        #expect(try ExternalCommand("curl", ["-s", "http://127.0.0.1:\(daemon.port)/v1/sandboxes"]).check().stdout.contains("bearer token"))
    }
}
