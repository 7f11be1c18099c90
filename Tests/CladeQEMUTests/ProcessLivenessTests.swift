import CladeVMM
import Foundation
import Glibc
import Testing

/// The liveness checks that decide whether a VMM has exited: a zombie and a process that is not
/// the one named are gone; a running process with the marker is alive, while it starts as well.
struct ProcessLivenessTests {
    @Test func aRunningProcessWithItsMarkerIsAliveAndStarting() throws {
        let sleeper = Process()
        sleeper.executableURL = URL(fileURLWithPath: "/bin/sleep")
        sleeper.arguments = ["30.4242"]
        try sleeper.run()
        let pid = sleeper.processIdentifier
        defer {
            kill(pid, SIGKILL)
            sleeper.waitUntilExit()
        }
        var seen = false
        for _ in 0..<200 where !seen {
            seen = ProcessControl.isAlive(pid, marker: "30.4242")
            if !seen { usleep(10_000) }
        }
        #expect(seen)
        #expect(ProcessControl.isStarting(pid, marker: "30.4242"))
        #expect(!ProcessControl.isAlive(pid, marker: "another-machine"))
        #expect(!ProcessControl.isStarting(pid, marker: "another-machine"), "a process with a command line that lacks the marker is not ours")
    }

    @Test func aZombieIsNeitherAliveNorStarting() throws {
        // posix_spawn rather than Foundation's Process, which reaps its children itself.
        var child: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        defer { argv.forEach { free($0) } }
        try #require(posix_spawn(&child, "/bin/true", nil, nil, argv, environ) == 0)
        defer { waitpid(child, nil, 0) }
        // Not reaped yet: a zombie, whose command line reads empty.
        var zombie = false
        for _ in 0..<200 where !zombie {
            let stat = (try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8)) ?? ""
            zombie = stat.contains(") Z")
            if !zombie { usleep(10_000) }
        }
        try #require(zombie)
        #expect(!ProcessControl.isAlive(child, marker: ""))
        #expect(!ProcessControl.isStarting(child, marker: "anything"))
    }
}
