import CladeStore
import Foundation
import Testing

/// Runs the release `clade` binary against a private store, the way a user would.
struct CLIHarness: Sendable {
    struct Result: Sendable {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// The package root, found from this file's location.
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `CLADE_BIN`, else `.build/release/clade` (built by scripts/build.sh).
    static var binary: URL {
        if let explicit = ProcessInfo.processInfo.environment["CLADE_BIN"] { return URL(fileURLWithPath: explicit) }
        return packageRoot.appendingPathComponent(".build/release/clade")
    }

    /// One store for the whole test run, so the default image is built once.
    static let sharedHome = privateHome("itest")

    /// A store of a suite's own under the temporary directory, so suites cannot mistake each
    /// other's work (image builds in tmp/, sandboxes, snapshots) for their own.
    static func privateHome(_ name: String) -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("clade-\(name)-\(getpid())")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    var home: URL = CLIHarness.sharedHome
    var environment: [String: String] = [:]
    /// Run clade as this user (through `setpriv`, which keeps the environment and execs, so the
    /// process is clade itself) instead of as the test.
    var user: String?
    /// With ``user``: the control group (a directory) clade starts in, as a delegating login would
    /// place it.
    var startGroup: URL?
    /// The clade binary this harness runs; ``binary`` unless changed.
    var binary: URL = CLIHarness.binary

    /// The process that runs `clade arguments...` as this harness says, not yet started.
    func process(_ arguments: [String]) throws -> Process {
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw HarnessError("\(binary.path) is missing: run scripts/build.sh before the integration tests")
        }
        let process = Process()
        var env = ProcessInfo.processInfo.environment
        env["CLADE_HOME"] = home.path
        if let user {
            let account = try #require(getpwnam(user), "no account \(user)")
            env["HOME"] = String(cString: account.pointee.pw_dir)
            env["USER"] = user
            env["LOGNAME"] = user
            let drop = ["setpriv", "--reuid", user, "--regid", user, "--init-groups", "--", binary.path] + arguments
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            if let startGroup {
                process.arguments = ["-c", #"echo $$ > "$0/cgroup.procs" && exec "$@""#, startGroup.path] + drop
            } else {
                process.arguments = ["-c", #"exec "$@""#, "sh"] + drop
            }
        } else {
            process.executableURL = binary
            process.arguments = arguments
        }
        env.merge(environment) { _, new in new }
        process.environment = env
        return process
    }

    func run(_ arguments: [String], timeout: Double = 300) throws -> Result {
        let process = try process(arguments)
        let outFile = FileManager.default.temporaryDirectory.appendingPathComponent("clade-out-\(UUID().uuidString)")
        let errFile = FileManager.default.temporaryDirectory.appendingPathComponent("clade-err-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: outFile.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errFile.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: outFile)
            try? FileManager.default.removeItem(at: errFile)
        }
        process.standardOutput = try FileHandle(forWritingTo: outFile)
        process.standardError = try FileHandle(forWritingTo: errFile)
        process.standardInput = FileHandle.nullDevice
        // Woken by the exit itself: polling (as Foundation's waitUntilExit does, every 50 ms) added
        // up to 50 ms to every command and rounded the latencies the isolation tests compare.
        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        try process.run()
        if exited.wait(timeout: .now() + timeout) == .timedOut {
            process.terminate()
            throw HarnessError("clade \(arguments.joined(separator: " ")) did not finish within \(timeout) s")
        }
        return Result(
            status: process.terminationStatus,
            stdout: (try? String(contentsOf: outFile, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOf: errFile, encoding: .utf8)) ?? "")
    }

    /// Sandbox directories currently in the store.
    func sandboxDirectories() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: home.appendingPathComponent("sandboxes").path)) ?? []
    }

    /// QEMU processes whose command line mentions this store.
    func qemuProcesses() -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !data.isEmpty else { return false }
            let commandLine = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            return commandLine.contains("qemu-system") && commandLine.contains(home.path + "/")
        }
    }
}

extension CLIHarness {
    /// A harness that runs clade as `user` in a 0700 store of its own, the way that user would:
    /// with copies of clade and its agent (the build may sit where the user cannot enter), and
    /// a control group delegated to the user (cgroup v2: the user's subtree, with clade started
    /// in a group below it; v1: a group in each of the cpu, memory and pids hierarchies), named
    /// in `CLADE_CGROUP`.
    static func unprivileged(_ user: String, home name: String) throws -> CLIHarness {
        var cli = CLIHarness(home: privateHome(name))
        cli.user = user
        let binaries = cli.home.appendingPathComponent("bin")
        try FileManager.default.createDirectory(at: binaries, withIntermediateDirectories: true)
        for name in ["clade", "clade-agent"] {
            let target = binaries.appendingPathComponent(name)
            try? FileManager.default.removeItem(at: target)
            try FileManager.default.copyItem(at: binary.deletingLastPathComponent().appendingPathComponent(name), to: target)
        }
        cli.binary = binaries.appendingPathComponent("clade")
        _ = try ExternalCommand("chown", ["-R", "\(user):", cli.home.path]).check()
        chmod(cli.home.path, 0o700)
        let group = "clade-test-\(user)"
        cli.environment["CLADE_CGROUP"] = "/" + group
        cli.startGroup = try delegateControlGroup(group, to: user)
        return cli
    }

    /// Makes `/sys/fs/cgroup/<group>` the user's, as a delegating service manager would, and
    /// returns the group clade should start in (v2 only; v1 has no such rule).
    private static func delegateControlGroup(_ group: String, to user: String) throws -> URL? {
        let root = URL(fileURLWithPath: "/sys/fs/cgroup")
        func own(_ directory: URL, files: [String]) throws {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let paths = [directory.path] + files.map { directory.appendingPathComponent($0).path }.filter { FileManager.default.fileExists(atPath: $0) }
            _ = try ExternalCommand("chown", ["\(user):"] + paths).check()
        }
        guard FileManager.default.fileExists(atPath: root.appendingPathComponent("cgroup.controllers").path) else {
            for controller in ["cpu", "memory", "pids"] {
                try own(root.appendingPathComponent("\(controller)/\(group)"), files: ["cgroup.procs", "tasks"])
            }
            return nil
        }
        try? Data("+cpu +memory +pids".utf8).write(to: root.appendingPathComponent("cgroup.subtree_control"))
        let delegated = root.appendingPathComponent(group)
        try own(delegated, files: ["cgroup.procs", "cgroup.subtree_control", "cgroup.threads"])
        let session = delegated.appendingPathComponent("session")
        try FileManager.default.createDirectory(at: session, withIntermediateDirectories: true)
        return session
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
