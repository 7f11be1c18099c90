import Foundation
import Testing

/// End times with real VMs: enforced by the next clade command when no daemon runs, by the
/// daemon's timer when one does, with `standby` as the other way to end.
@Suite(.serialized) struct LifetimeIntegrationTests {
    func json(_ text: String) throws -> [[String: Any]] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]], "not a JSON list: \(text)")
    }

    @Test func theNextCommandEndsAnExpiredSandboxWithoutADaemon() throws {
        let cli = CLIHarness(home: CLIHarness.privateHome("lifetime-cli"))
        // Long enough that `ls` below surely runs before the end, however slow the machine.
        let boot = try cli.run(["boot", "--timeout", "15", "--json"])
        let booted = Date()
        try #require(boot.status == 0, "\(boot.stderr)")
        let sandbox = try #require(try JSONSerialization.jsonObject(with: Data(boot.stdout.utf8)) as? [String: Any])
        let id = try #require(sandbox["id"] as? String)
        #expect(sandbox["expires_at"] != nil && sandbox["on_timeout"] as? String == "kill")
        let listed = try cli.run(["ls"])
        #expect(listed.stdout.contains("(kill)"), "ls shows the end time: \(listed.stdout)")
        Thread.sleep(forTimeInterval: max(0, 17 - Date().timeIntervalSince(booted)))
        #expect(cli.qemuProcesses().count == 1, "nothing runs in the background without a daemon")
        let after = try json(try cli.run(["ls", "--json"]).stdout)
        #expect(!after.contains { $0["id"] as? String == id }, "the expired sandbox is still listed")
        #expect(cli.qemuProcesses().isEmpty)
        #expect(cli.sandboxDirectories().isEmpty)
    }

    @Test func anEndTimeCanBeMovedAndCanMeanStandby() throws {
        let cli = CLIHarness(home: CLIHarness.privateHome("lifetime-standby"))
        try #require(try cli.run(["bake", "--tag", "life", "--warm", "echo alive > /root/mark"]).status == 0)
        let fork = try cli.run(["fork", "life", "--timeout", "600", "--on-timeout", "standby", "--json"])
        try #require(fork.status == 0, "\(fork.stderr)")
        let id = try #require((try JSONSerialization.jsonObject(with: Data(fork.stdout.utf8)) as? [String: Any])?["id"] as? String)
        let moved = try cli.run(["timeout", id, "2", "--on-timeout", "standby"])
        #expect(moved.status == 0, "\(moved.stderr)")
        Thread.sleep(forTimeInterval: 4)
        let listed = try json(try cli.run(["ls", "--json"]).stdout)
        let entry = try #require(listed.first { $0["id"] as? String == id })
        #expect(entry["state"] as? String == "standby")
        #expect(entry["expires_at"] == nil)
        #expect(try cli.run(["resume", id]).status == 0)
        #expect(try cli.run(["exec", id, "--", "cat", "/root/mark"]).stdout == "alive\n")
        #expect(try cli.run(["timeout", id, "none"]).status == 0)
        #expect(try cli.run(["timeout", id, "soon"]).status != 0)
        #expect(try cli.run(["kill", id]).status == 0)
        _ = try cli.run(["rmi", "life"])
    }

    @Test func theDaemonEndsExpiredSandboxesOnItsOwn() throws {
        let home = CLIHarness.privateHome("lifetime-daemon")
        let cli = CLIHarness(home: home)
        let daemon = DaemonProcess(home: home)
        try daemon.start()
        defer { daemon.stop() }
        let boot = try cli.run(["boot", "--timeout", "3"])
        try #require(boot.status == 0, "\(boot.stderr)")
        #expect(cli.qemuProcesses().count == 1)
        // No clade command runs from here on: only the daemon can end it.
        var gone = false
        for _ in 0..<40 where !gone {
            Thread.sleep(forTimeInterval: 0.5)
            gone = cli.qemuProcesses().isEmpty && cli.sandboxDirectories().isEmpty
        }
        #expect(gone, "the daemon did not end the sandbox after its end time")
    }
}
