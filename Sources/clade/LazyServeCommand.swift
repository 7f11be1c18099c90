import ArgumentParser
import CladeEngine
import CladePack
import CladeStore
import Foundation
import Logging

/// The FUSE server of a lazily pulled snapshot's memory, or of its image's root filesystem. The
/// engine starts it detached when a fork needs it; it is not meant to be run by hand.
struct LazyServe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lazy-serve", abstract: "Serve a lazily pulled snapshot's memory or root filesystem over FUSE (started by clade itself).", shouldDisplay: false)
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Do not fetch the recorded working set before faults ask for it.") var noPrefetch = false
    @Option(help: "Serve this root filesystem (sha256:...) instead of a snapshot's memory.") var rootfs: String?
    @Argument(help: "Snapshot tag (for its memory).") var tag: String?

    func validate() throws {
        guard (rootfs == nil) != (tag == nil) else { throw ValidationError("give a snapshot tag or --rootfs DIGEST, not both") }
    }

    func run() throws {
        let engine = global.makeEngineWithoutReaping()
        let environment = ProcessInfo.processInfo.environment
        let credentials = environment["CLADE_REGISTRY_USERNAME"].map {
            RegistryCredentials(username: $0, password: environment["CLADE_REGISTRY_PASSWORD"] ?? "")
        }
        let idle = environment["CLADE_LAZY_IDLE_SECONDS"].flatMap(TimeInterval.init) ?? 10
        let held = environment["CLADE_LAZY_FILL"] == "held"
        let server: LazyFileServer
        if let rootfs {
            server = try LazyFileServer(
                home: engine.home, rootfs: try Digest(parsing: rootfs), credentials: credentials, idleGrace: idle, fillHeld: held, logger: Logger(label: "clade.lazy-rootfs"))
        } else {
            server = try LazyFileServer(
                home: engine.home, tag: tag ?? "", credentials: credentials, idleGrace: idle, fillHeld: held, prefetch: !noPrefetch, logger: Logger(label: "clade.lazy-memory"))
        }
        try server.run()
    }
}
