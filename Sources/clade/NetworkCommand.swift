import ArgumentParser
import CladeEngine
import CladeModel
import Foundation

struct NetworkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "network",
        abstract: "Change a running sandbox's network policy in place (outbound, allow:..., deny:...[;allow:...]).",
        discussion: """
            The new rules replace the old ones in one packet-filter transaction; connections the guest \
            already has stay up. A sandbox started with 'none' keeps it for life: start it with \
            'deny:0.0.0.0/0' to open its network later.
            """)
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print the sandbox as JSON.") var json = false
    @Argument(help: "Sandbox id.") var id: String
    @Argument(help: "The policy, as --network takes it.") var policy: NetworkPolicy

    func run() async throws {
        let record = try await global.makeEngine().sandboxes.setNetwork(id: id, policy: policy)
        if json { return try printJSON(SandboxView(record)) }
        print("\(id) network \(record.network ?? .standard)")
    }
}
