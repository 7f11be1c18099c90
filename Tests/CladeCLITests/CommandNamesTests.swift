import ArgumentParser
import Testing

@testable import clade

/// Every command spells out its name. Without one, ArgumentParser derives it from the type's
/// name with `String(describing:)` for every command in the tree on every run, and each of those
/// casts scans the binary's whole protocol-conformance table: ~5 ms of every `clade` invocation,
/// `--version` included (measured with `perf record` over 20 runs).
struct CommandNamesTests {
    static func allCommands(_ command: ParsableCommand.Type = Clade.self) -> [ParsableCommand.Type] {
        [command] + command.configuration.subcommands.flatMap { allCommands($0) }
    }

    @Test func everyCommandNamesItself() {
        let commands = Self.allCommands()
        #expect(commands.count > 50)
        for command in commands {
            #expect(command.configuration.commandName != nil, "\(command) has no commandName in its CommandConfiguration")
        }
    }

    @Test func aCommandsNameIsWhatItsTypeWouldDeriveTo() {
        // The names were the derived ones before they were written out; scripts depend on them.
        let expected: [String: String] = ["Exec": "exec", "Doctor": "doctor", "Snapshots": "snapshots", "Unpause": "unpause", "Inspect": "inspect"]
        for command in Self.allCommands() {
            if let name = expected["\(command)"] { #expect(command.configuration.commandName == name) }
        }
    }
}
