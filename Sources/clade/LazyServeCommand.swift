import ArgumentParser
import CladeEngine
import CladePack
import CladeStore
import Foundation
import Logging

/// The FUSE server of a lazily pulled snapshot's memory. The engine starts it detached when a
/// fork needs it; it is not meant to be run by hand.
struct LazyServe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lazy-serve", abstract: "Serve a lazily pulled snapshot's memory over FUSE (started by clade itself).", shouldDisplay: false)
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Do not fetch the recorded working set before faults ask for it.") var noPrefetch = false
    @Argument(help: "Snapshot tag.") var tag: String

    func run() throws {
        let engine = global.makeEngineWithoutReaping()
        let environment = ProcessInfo.processInfo.environment
        let credentials = environment["CLADE_REGISTRY_USERNAME"].map {
            RegistryCredentials(username: $0, password: environment["CLADE_REGISTRY_PASSWORD"] ?? "")
        }
        let idle = environment["CLADE_LAZY_IDLE_SECONDS"].flatMap(TimeInterval.init) ?? 10
        let server = try LazyMemoryServer(
            home: engine.home, tag: tag, credentials: credentials, idleGrace: idle, fillHeld: environment["CLADE_LAZY_FILL"] == "held", prefetch: !noPrefetch,
            logger: Logger(label: "clade.lazy-memory"))
        try server.run()
    }
}
