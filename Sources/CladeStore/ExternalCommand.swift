import Foundation
import Logging

/// Runs a host program (qemu-img, mke2fs, ...) to completion and captures its output.
public struct ExternalCommand: Sendable {
    public struct Output: Sendable {
        public let status: Int32
        public let stdout: String
        public let stderr: String
    }

    public let executable: String
    public let arguments: [String]
    public var environment: [String: String]?
    public var currentDirectory: URL?

    public init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, currentDirectory: URL? = nil) {
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.currentDirectory = currentDirectory
    }

    /// The command as a shell-like string, for messages.
    public var commandLine: String { ([executable] + arguments).joined(separator: " ") }

    /// Finds `name` on PATH (or accepts an absolute path).
    public static func locate(_ name: String) -> URL? {
        if name.hasPrefix("/") { return FileManager.default.isExecutableFile(atPath: name) ? URL(fileURLWithPath: name) : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in (path + ":/usr/sbin:/sbin").split(separator: ":") {
            let candidate = URL(fileURLWithPath: String(directory)).appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return nil
    }

    /// Runs and returns the output whatever the exit status.
    public func run(stdin: Data? = nil) throws -> Output {
        guard let url = Self.locate(executable) else {
            throw StoreError.commandNotFound(executable, fix: "run scripts/install-deps.sh to install clade's host dependencies")
        }
        let process = Process()
        process.executableURL = url
        process.arguments = arguments
        if let environment {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        if let currentDirectory { process.currentDirectoryURL = currentDirectory }
        let outPipe = Pipe(), errPipe = Pipe()
        process.standardOutput = outPipe
        process.standardError = errPipe
        let inPipe = Pipe()
        process.standardInput = stdin == nil ? FileHandle.nullDevice : inPipe
        try process.run()
        if let stdin {
            DispatchQueue.global().async {
                try? inPipe.fileHandleForWriting.write(contentsOf: stdin)
                try? inPipe.fileHandleForWriting.close()
            }
        }
        let errData = LockedData()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errData.set(errPipe.fileHandleForReading.readDataToEndOfFile())
            group.leave()
        }
        let outData = outPipe.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return Output(
            status: process.terminationStatus,
            stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData.get(), as: UTF8.self))
    }

    /// Runs and throws ``StoreError/commandFailed(command:status:output:)`` on a non-zero exit.
    @discardableResult
    public func check(stdin: Data? = nil) throws -> Output {
        let output = try run(stdin: stdin)
        guard output.status == 0 else {
            throw StoreError.commandFailed(command: commandLine, status: output.status, output: output.stderr + output.stdout)
        }
        return output
    }
}

private final class LockedData: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    func set(_ value: Data) { lock.withLock { data = value } }
    func get() -> Data { lock.withLock { data } }
}
