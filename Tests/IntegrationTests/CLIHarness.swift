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
    /// Run clade as this user (through `runuser`, which keeps the environment) instead of as the test.
    var user: String?
    /// The clade binary this harness runs; ``binary`` unless changed.
    var binary: URL = CLIHarness.binary

    func run(_ arguments: [String], timeout: Double = 300) throws -> Result {
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw HarnessError("\(binary.path) is missing: run scripts/build.sh before the integration tests")
        }
        let process = Process()
        if let user {
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/runuser")
            process.arguments = ["-u", user, "--", binary.path] + arguments
        } else {
            process.executableURL = binary
            process.arguments = arguments
        }
        var env = ProcessInfo.processInfo.environment
        env["CLADE_HOME"] = home.path
        env.merge(environment) { _, new in new }
        process.environment = env
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
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            process.terminate()
            throw HarnessError("clade \(arguments.joined(separator: " ")) did not finish within \(timeout) s")
        }
        process.waitUntilExit()
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

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
