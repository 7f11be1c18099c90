import ArgumentParser
import Foundation
import Testing

@testable import clade

/// The README's CLI reference against the commands clade really parses: a command or an option
/// the README names must exist, and every command must have a row there.
struct CommandLineReferenceTests {
    static let readme: String = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return (try? String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)) ?? ""
    }()

    /// The rows of the table under "## CLI reference": each row's first cell.
    static var referenceRows: [String] {
        guard let start = readme.range(of: "\n## CLI reference\n") else { return [] }
        let section = readme[start.upperBound...]
        let end = section.range(of: "\n## ")?.lowerBound ?? section.endIndex
        return section[..<end].split(separator: "\n").filter { $0.hasPrefix("| `clade ") }.map { row in
            // An escaped bar ("kill\\|standby") is an alternative inside the cell, not its end.
            String(row.replacingOccurrences(of: "\\|", with: "/").dropFirst(2).prefix { $0 != "|" })
        }
    }

    /// Every command path under `clade`, with its type: ["image", "pull"] → Pull.
    static func commandPaths(_ command: ParsableCommand.Type = Clade.self, prefix: [String] = []) -> [([String], ParsableCommand.Type)] {
        command.configuration.subcommands.flatMap { sub -> [([String], ParsableCommand.Type)] in
            let name = sub.configuration.commandName ?? sub._commandName
            let path = prefix + [name]
            return sub.configuration.subcommands.isEmpty ? [(path, sub)] : commandPaths(sub, prefix: path)
        }
    }

    @Test func everyCommandHasARowInTheReadme() {
        #expect(!Self.referenceRows.isEmpty, "no CLI reference table found in README.md")
        let rows = Self.referenceRows.joined(separator: "\n")
        // `lazy-serve` is clade's own helper process (started by forks), not a user command.
        for (path, _) in Self.commandPaths() where path != ["lazy-serve"] {
            #expect(rows.contains("`clade \(path.joined(separator: " "))"), "`clade \(path.joined(separator: " "))` has no row in the README's CLI reference")
        }
    }

    @Test func everyOptionTheReadmeNamesExists() throws {
        let paths = Self.commandPaths().sorted { $0.0.count > $1.0.count }
        var checked = 0
        for row in Self.referenceRows {
            // A row may name several commands ("`clade image ls [--json]`, `clade image inspect NAME`").
            for synopsis in row.components(separatedBy: "`clade ").dropFirst() {
                let words = synopsis.prefix { $0 != "`" }.split(separator: " ").map(String.init)
                guard let (path, command) = paths.first(where: { Array(words.prefix($0.0.count)) == $0.0 }) else {
                    Issue.record("the README names `clade \(words.joined(separator: " "))`, which is no command")
                    continue
                }
                let help = command.helpMessage(columns: 10_000)
                for word in words.dropFirst(path.count) {
                    for option in word.components(separatedBy: CharacterSet(charactersIn: "[]/|")) where option.hasPrefix("--") {
                        let name = String(option.prefix { $0.isLetter || $0.isNumber || $0 == "-" })
                        guard name.count > 2 else { continue }
                        checked += 1
                        #expect(help.contains(name), "`clade \(path.joined(separator: " "))` has no option \(name), which the README names")
                    }
                }
            }
        }
        #expect(checked > 50, "only \(checked) options found in the README's CLI reference")
    }

    @Test func theQuickStartsCommandsParse() throws {
        let fork = try #require(try Clade.parseAsRoot(["fork", "base", "-n", "8", "--json"]) as? Fork)
        #expect(fork.n == 8 && fork.json)
        let exec = try #require(try Clade.parseAsRoot(["exec", "abc", "--env", "A=1", "--", "python3", "-c", "print(1)"]) as? Exec)
        #expect(exec.command == ["python3", "-c", "print(1)"])
        #expect(try parseEnvironment(["A=1", "B==2"]) == ["A": "1", "B": "=2"])
        #expect(throws: (any Error).self) { try parseEnvironment(["=1"]) }
        #expect(throws: (any Error).self) { try Clade.parseAsRoot(["fork", "base", "--memory-placement", "sideways"]) }
        #expect(formatBytes(512) == "512 B" && formatBytes(3 << 20) == "3.0 MiB")
    }
}
