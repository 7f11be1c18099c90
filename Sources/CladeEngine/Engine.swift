import CladeGuest
import CladeModel
import CladeStore
import CladeVMM
import Foundation
import Logging

/// Lifecycle orchestration: images, booting, exec and teardown of sandboxes.
///
/// The CLI and the daemon are thin layers over this type. It keeps no state in memory between
/// calls: everything lives in the store, so several clade processes can work on one home at
/// once. It speaks to hypervisors only through ``VMBackend`` and ``VMHandle``.
public struct Engine: Sendable {
    public let home: CladeHome
    public let backend: any VMBackend
    /// Where sandboxes placed in RAM (`--memory-placement ram`) map their memory from.
    public var memoryTier: MemoryTier { MemoryTier(home: home) }
    package let logger: Logger
    /// Start sandboxes even where the host cannot give them the isolation their network policy
    /// needs (`--allow-weaker-isolation`). Each such sandbox records what it lacks. Off by
    /// default: without it clade refuses before anything is made.
    public let allowsWeakerIsolation: Bool
    /// The loopback port of the egress proxy that enforces host names in network policies
    /// (`clade serve --egress-proxy-port`); nil in a process that runs none, which then refuses
    /// policies that name hosts.
    public var egressProxyPort: Int?

    public init(
        home: CladeHome, backend: any VMBackend = DefaultBackend.make(), logger: Logger = Logger(label: "clade.engine"),
        allowsWeakerIsolation: Bool = false
    ) {
        self.home = home
        self.backend = backend
        self.logger = logger
        self.allowsWeakerIsolation = allowsWeakerIsolation
    }

    /// Most children one fork request may start.
    public static let maxForkCount = 100

    /// Images: build, look up, list, remove.
    public var images: Images { Images(engine: self) }
    /// Sandboxes: cold boot, exec, list, pause, kill.
    public var sandboxes: Sandboxes { Sandboxes(engine: self) }
    /// Snapshots: take, bake, list, inspect, remove, compact.
    public var snapshots: Snapshots { Snapshots(engine: self) }
    /// Forks: start children of a snapshot.
    public var forks: Forks { Forks(engine: self) }
    /// Branches: capture a running fork into a new snapshot.
    public var branches: Branches { Branches(engine: self) }
    /// Standby: capture a sandbox to disk and resume it later.
    public var standby: Standby { Standby(engine: self) }
    /// Recovery: roll back what a dead clade left, re-adopt running machines.
    public var recovery: Recovery { Recovery(engine: self) }
    /// Packs: move snapshots between hosts.
    public var packs: Packs { Packs(engine: self) }
    /// End times of sandboxes, and the reaper that enforces them.
    public var lifetimes: Lifetimes { Lifetimes(engine: self) }
    /// Processes (stream, stdin, signals, PTYs) and resident interpreters in running sandboxes.
    public var processes: Processes { Processes(engine: self) }
    /// The store as a whole: garbage collection.
    public var storage: Storage { Storage(engine: self) }

    package var blobs: BlobStore { BlobStore(home: home, logger: logger) }
    var imageCatalog: ImageCatalog { ImageCatalog(home: home) }
    package var sandboxCatalog: SandboxCatalog { SandboxCatalog(home: home) }
    package var disks: any DiskChain { backend.disks }

    /// A handle on sandbox `id`'s machine; `pid` nil means the one its runtime directory records.
    func machine(_ id: String, pid: Int32?) -> any VMHandle {
        backend.attach(runtimeDirectory: sandboxCatalog.paths(id).directory, pid: pid)
    }

    /// True when sandbox `id`'s machine process `pid` still runs.
    func isAlive(_ id: String, pid: Int32?) -> Bool {
        guard let pid else { return false }
        return machine(id, pid: pid).isAlive
    }
}
