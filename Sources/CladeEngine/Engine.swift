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
    package let logger: Logger

    public init(home: CladeHome, backend: any VMBackend = DefaultBackend.make(), logger: Logger = Logger(label: "clade.engine")) {
        self.home = home
        self.backend = backend
        self.logger = logger
    }

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
