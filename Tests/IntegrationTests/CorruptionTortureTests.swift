import CladeStore
import Foundation
import Testing

/// Twenty forks write and sync files on their disks and in memory, then all their VMs are
/// killed abruptly. Every child's disk must still be a clean ext4 after journal replay, and the
/// snapshot must be byte-identical to before.
@Suite(.serialized) struct CorruptionTortureTests {
    static let home = CLIHarness.privateHome("torture")
    let cli = CLIHarness(home: CorruptionTortureTests.home)

    func fingerprint(_ relative: String) throws -> (UInt64, Digest) {
        let url = Self.home.appendingPathComponent(relative)
        return (try #require(try FileSystem.status(of: url)).inode, try Digest.ofFile(at: url).digest)
    }

    @Test func abruptlyKilledForksLeaveConsistentDisksAndAnUntouchedSnapshot() throws {
        let bake = try cli.run(["bake", "--tag", "torture"])
        #expect(bake.status == 0, "\(bake.stderr)")
        let memoryBefore = try fingerprint("snapshots/torture/memory")
        let diskBefore = try fingerprint("snapshots/torture/layer-0.qcow2")

        let fork = try cli.run(["fork", "torture", "-n", "20", "--json"], timeout: 600)
        #expect(fork.status == 0, "\(fork.stderr)\n\(fork.stdout)")
        let children = fork.stdout.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["id"] as? String
        }
        #expect(children.count == 20)

        let writers = DispatchGroup()
        let failures = LockedList()
        for id in children {
            writers.enter()
            DispatchQueue.global().async {
                defer { writers.leave() }
                let script = """
                    mkdir -p /root/data && i=0
                    while [ $i -lt 20 ]; do dd if=/dev/urandom of=/root/data/f$i bs=4k count=8 2>/dev/null; i=$((i+1)); done
                    head -c 4000000 /dev/urandom > /tmp/in-memory
                    sync
                    echo ok
                    """
                let result = try? cli.run(["exec", id, "--timeout", "240", "--", "sh", "-c", script], timeout: 300)
                if result?.stdout != "ok\n" { failures.append("\(id): \(result?.stderr ?? "no result")") }
            }
        }
        writers.wait()
        #expect(failures.items.isEmpty, "\(failures.items)")

        // Abrupt: SIGKILL every QEMU, no shutdown, no QMP.
        for id in children {
            let pidFile = Self.home.appendingPathComponent("sandboxes/\(id)/qemu.pid")
            if let pid = (try? String(contentsOf: pidFile, encoding: .utf8)).flatMap({ Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) {
                kill(pid, SIGKILL)
            }
        }
        Thread.sleep(forTimeInterval: 1)

        let scratch = Self.home.appendingPathComponent("raw-check")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        for id in children {
            let overlay = Self.home.appendingPathComponent("sandboxes/\(id)/layer-0.qcow2")
            let raw = scratch.appendingPathComponent("\(id).raw")
            try ExternalCommand("qemu-img", ["convert", "-O", "raw", overlay.path, raw.path]).check()
            let replay = try ExternalCommand("e2fsck", ["-E", "journal_only", "-y", raw.path]).run()
            #expect(replay.status <= 1, "\(id): journal replay exited \(replay.status): \(replay.stdout) \(replay.stderr)")
            let check = try ExternalCommand("e2fsck", ["-fn", raw.path]).run()
            #expect(check.status == 0, "\(id): e2fsck -fn exited \(check.status): \(check.stdout.suffix(600))")
            try FileSystem.remove(raw)
        }
        try FileSystem.remove(scratch)

        #expect(try fingerprint("snapshots/torture/memory") == memoryBefore)
        #expect(try fingerprint("snapshots/torture/layer-0.qcow2") == diskBefore)
        // clade notices the dead VMs and cleans up after them.
        let listed = try cli.run(["ls", "--json"])
        #expect(listed.stdout.contains("\"dead\""))
        #expect(cli.sandboxDirectories().isEmpty)
        #expect(try cli.run(["rmi", "torture"]).status == 0)
    }
}

final class LockedList: @unchecked Sendable {
    private let lock = NSLock()
    private var storage: [String] = []
    func append(_ item: String) { lock.withLock { storage.append(item) } }
    var items: [String] { lock.withLock { storage } }
}
