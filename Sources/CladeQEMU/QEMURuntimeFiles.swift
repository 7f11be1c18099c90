import Foundation

/// The files QEMU keeps for one machine in its runtime directory. The names are those clade has
/// always used, so sandboxes started by earlier releases are found after an upgrade.
struct QEMURuntimeFiles: Sendable {
    let directory: URL

    var qmpSocket: URL { directory.appendingPathComponent("qmp.sock") }
    var agentSocket: URL { directory.appendingPathComponent("agent.sock") }
    var console: URL { directory.appendingPathComponent("console.log") }
    var pidFile: URL { directory.appendingPathComponent("qemu.pid") }
    var launchLog: URL { directory.appendingPathComponent("qemu-launch.log") }
    /// The API socket of the user-mode network helper of an unprivileged machine.
    var networkHelperSocket: URL { directory.appendingPathComponent("slirp.sock") }
    var networkHelperLog: URL { directory.appendingPathComponent("slirp.log") }
    /// The directory path is on QEMU's command line; checking it guards against pid reuse.
    var processMarker: String { directory.path }
}
