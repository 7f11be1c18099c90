import CladeGuest
import CladeModel
import CladeStore
import CladeVMM
import Foundation
import Logging

/// Lifecycle orchestration: images, booting, exec and teardown of sandboxes.
///
/// The CLI and (later) the daemon are thin layers over this type. It keeps no state in
/// memory between calls: everything lives in the store, so several clade processes can
/// work on one home at once.
public struct Engine: Sendable {
    public let home: CladeHome
    public let hypervisor: any Hypervisor
    let logger: Logger

    public init(home: CladeHome, hypervisor: any Hypervisor = QEMUDriver(), logger: Logger = Logger(label: "clade.engine")) {
        self.home = home
        self.hypervisor = hypervisor
        self.logger = logger
    }

    var blobs: BlobStore { BlobStore(home: home, logger: logger) }
    var images: ImageCatalog { ImageCatalog(home: home) }
    var sandboxes: SandboxCatalog { SandboxCatalog(home: home) }
}
