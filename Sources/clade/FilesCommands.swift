import ArgumentParser
import CladeEngine
import CladeGuest
import CladeGuestProtocol
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct Files: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "files",
        abstract: "Work with files in a running sandbox.",
        subcommands: [FilesList.self, FilesStat.self, FilesMakeDirectory.self, FilesMove.self, FilesRemove.self, FilesGet.self, FilesPut.self, FilesWatch.self])
}

private func printEntries(_ entries: [FileEntry], json: Bool) throws {
    if json { return try printJSON(entries) }
    for entry in entries {
        let kind = entry.type == .directory ? "d" : entry.type == .symlink ? "l" : entry.type == .file ? "-" : "?"
        let mode = String(entry.mode, radix: 8).leftPadded(to: 4)
        let link = entry.symlinkTarget.map { " -> \($0)" } ?? ""
        print("\(kind)\(mode) \(String(entry.uid).leftPadded(to: 5)) \(String(entry.gid).leftPadded(to: 5)) \(String(entry.size).leftPadded(to: 12)) \(entry.path)\(link)")
    }
}

/// The sandbox and the guest path most `files` commands start with.
struct GuestPath: ParsableArguments {
    @Argument(help: "Sandbox id.") var id: String
    @Argument(help: "Absolute guest path.") var path: String
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}

struct FilesList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List a directory, to --depth levels.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Levels to descend.") var depth = 1
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var target: GuestPath

    func run() async throws {
        try printEntries(try await global.makeEngine().processes.agent(for: target.id).list(target.path, depth: depth), json: json)
    }
}

struct FilesStat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stat", abstract: "Describe one path.")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var target: GuestPath

    func run() async throws {
        let entry = try await global.makeEngine().processes.agent(for: target.id).stat(target.path)
        if json { return try printJSON(entry) }
        try printEntries([entry], json: false)
    }
}

struct FilesMakeDirectory: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "mkdir", abstract: "Make a directory and its missing parents.")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var target: GuestPath

    func run() async throws {
        try await global.makeEngine().processes.agent(for: target.id).makeDirectory(target.path)
    }
}

struct FilesMove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "mv", abstract: "Rename a file or directory.")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var target: GuestPath
    @Argument(help: "The new absolute guest path.") var destination: String

    func run() async throws {
        try await global.makeEngine().processes.agent(for: target.id).move(target.path, to: destination)
    }
}

struct FilesRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a file, or a directory with everything in it.")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var target: GuestPath

    func run() async throws {
        try await global.makeEngine().processes.agent(for: target.id).remove(target.path)
    }
}

struct FilesGet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "get", abstract: "Copy a guest file out, streamed in chunks (- writes to standard output).")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var target: GuestPath
    @Argument(help: "Local file, or - for standard output.") var local: String

    func run() async throws {
        let agent = try await global.makeEngine().processes.agent(for: target.id)
        if local == "-" {
            _ = try await agent.download(target.path) { writeStandardOutput($0) }
            return
        }
        // Into a temporary file beside the target, renamed when complete: never a half-written copy.
        let destination = URL(fileURLWithPath: local)
        let partial = destination.deletingLastPathComponent().appendingPathComponent(".\(destination.lastPathComponent).clade-partial")
        guard FileManager.default.createFile(atPath: partial.path, contents: nil), let handle = try? FileHandle(forWritingTo: partial) else {
            throw ValidationError("cannot create \(partial.path); check that the directory exists and is writable")
        }
        do {
            _ = try await agent.download(target.path) { try handle.write(contentsOf: $0) }
            try handle.synchronize()
            try handle.close()
            guard rename(partial.path, destination.path) == 0 else {
                throw ValidationError("cannot move the download into place at \(destination.path): \(String(cString: strerror(errno)))")
            }
        } catch {
            try? handle.close()
            try? FileManager.default.removeItem(at: partial)
            throw error
        }
    }
}

struct FilesPut: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "put", abstract: "Copy a local file (- for standard input) into the guest, streamed in chunks; it appears whole.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Permission bits, octal.") var mode = "644"
    @Argument(help: "Sandbox id.") var id: String
    @Argument(help: "Local file, or - for standard input.") var local: String
    @Argument(help: "Absolute guest path.") var path: String

    func run() async throws {
        guard let bits = Int(mode, radix: 8) else { throw ValidationError("--mode takes octal permission bits, e.g. 755") }
        let handle: FileHandle
        if local == "-" {
            handle = FileHandle.standardInput
        } else {
            guard let opened = FileHandle(forReadingAtPath: local) else { throw ValidationError("cannot read \(local)") }
            handle = opened
        }
        let agent = try await global.makeEngine().processes.agent(for: id)
        let size = try await agent.upload(to: path, mode: bits) {
            let data = try handle.read(upToCount: AgentClient.transferChunkBytes) ?? Data()
            return data.isEmpty ? nil : data
        }
        writeStandardError("\(size) bytes written to \(path)\n")
    }
}

struct FilesWatch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch", abstract: "Print filesystem events under a directory as JSON lines until interrupted (or --count).")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Include subdirectories.") var recursive = false
    @Option(help: "Stop after this many events.") var count: Int?
    @OptionGroup var target: GuestPath

    struct Line: Encodable {
        var op: String
        var path: String
        var type: String?
    }

    func run() async throws {
        let agent = try await global.makeEngine().processes.agent(for: target.id)
        let limit = count
        let seen = Counter()
        try await agent.watch(target.path, recursive: recursive) { line in
            guard line.event == .fs, let operation = line.operation, let changed = line.path else {
                if line.event == .watching { writeStandardError("watching \(line.path ?? "")\n") }
                return true
            }
            try printJSON(Line(op: operation, path: changed, type: line.entry?.type.rawValue), compact: true)
            return limit.map { seen.increment() < $0 } ?? true
        }
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    /// The count after adding one.
    func increment() -> Int { lock.withLock { value += 1; return value } }
}
