import ArgumentParser
import CladeEngine
import CladeGuestProtocol
import CladeStore
import Foundation
import Logging

@main
struct Clade: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clade",
        abstract: "Bake microVMs into snapshots and fork them in milliseconds.",
        version: CladeVersion.current,
        subcommands: [
            Doctor.self, ImageCommand.self, Run.self, Boot.self, Exec.self, List.self, Kill.self,
            Bake.self, SnapshotCommand.self, Snapshots.self, SnapshotInfoCommand.self, Fork.self, RemoveSnapshot.self,
            Bench.self, Branch.self, Compact.self, Standby.self, Resume.self, Pause.self, Unpause.self, SetTimeout.self, NetworkCommand.self, Port.self,
            ProcessList.self, SignalCommand.self, Attach.self, Eval.self, Files.self,
            PackCommand.self, UnpackCommand.self, PushCommand.self, PullCommand.self, RecordWorkingSet.self, GarbageCollect.self, Serve.self, E2BCommand.self, LazyServe.self,
        ])

    // Every command in `subcommands`, and below them, names itself (CommandNamesTests): a derived
    // name costs a scan of the binary's conformance table, per command, on every run.

    /// Runs the command; a failure exits with its category's code (the README's error table),
    /// so scripts can tell "not found" from "the guest failed".
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asynchronous = command as? AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
        } catch let error as any CategorizedError {
            writeStandardError("Error: \(error)\n")
            Foundation.exit(error.category.exitCode)
        } catch {
            exit(withError: error)
        }
    }
}

/// Options every command takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Store directory (default: $CLADE_HOME, else /var/lib/clade for root, ~/.local/share/clade otherwise).")
    var home: String?

    @Flag(name: [.short, .long], help: "Log what clade does (repeat for more detail).")
    var verbose: Int

    @Flag(help: "Start sandboxes even where this host cannot give them the isolation their network policy needs (see `clade doctor`); each records what it lacks, and `clade ls` and `clade doctor` warn about it. With `clade serve`, for every sandbox the daemon starts.")
    var allowWeakerIsolation = false

    /// The engine for this command, after ending sandboxes whose end time has passed (lifetimes
    /// hold whether or not a daemon runs: the next command enforces them).
    func makeEngine() async -> Engine {
        let engine = makeEngineWithoutReaping()
        await engine.lifetimes.reapExpired()
        return engine
    }

    /// The engine, logging set up, and nothing else done (for commands that only read the store).
    func makeEngineWithoutReaping() -> Engine {
        let level: Logger.Level
        if let fromEnvironment = ProcessInfo.processInfo.environment["CLADE_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) {
            level = fromEnvironment
        } else {
            level = verbose >= 2 ? .debug : verbose == 1 ? .info : .warning
        }
        LoggingBootstrap.once(level: level)
        var engine = Engine(home: CladeHome.resolve(explicit: home), allowsWeakerIsolation: allowWeakerIsolation)
        // A daemon serving this store's egress proxy lets the CLI start sandboxes whose policies name hosts.
        engine.egressProxyPort = engine.registeredEgressProxyPort()
        return engine
    }

    /// The store, with logging set up as for ``makeEngine()``.
    func makeHome() -> CladeHome { makeEngineWithoutReaping().home }
}

enum LoggingBootstrap {
    private static let done = Locked(false)

    static func once(level: Logger.Level) {
        done.withLock { done in
            guard !done else { return }
            done = true
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        }
    }
}

/// Writes a value as pretty JSON on standard output (one line with `compact`, for streams).
func printJSON<T: Encodable>(_ value: T, compact: Bool = false) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = compact ? [.sortedKeys, .withoutEscapingSlashes] : [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    var line = try encoder.encode(value)
    line.append(0x0A)
    writeStandardOutput(line)
}

func writeStandardError(_ text: String) {
    writeStandardError(Data(text.utf8))
}

func writeStandardOutput(_ data: Data) { writeWhole(data, to: STDOUT_FILENO) }

func writeStandardError(_ data: Data) { writeWhole(data, to: STDERR_FILENO) }

/// Writes all of `data` to `descriptor`. A reader that went away (`clade exec ID -- cmd | head`)
/// ends clade at once with status 141, as a shell reports a command that SIGPIPE killed; the
/// Swift runtime ignores SIGPIPE, and Foundation's `FileHandle.write(_:)` turns the EPIPE into a crash.
private func writeWhole(_ data: Data, to descriptor: Int32) {
    data.withUnsafeBytes { buffer in
        var offset = 0
        while offset < buffer.count, let base = buffer.baseAddress {
            let written = write(descriptor, base + offset, buffer.count - offset)
            if written > 0 {
                offset += written
            } else if written < 0 && errno == EINTR {
                continue
            } else {
                if errno == EPIPE { exit(141) }
                return
            }
        }
    }
}
