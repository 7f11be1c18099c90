import CladeStore
import Foundation

extension QEMUDriver {
    /// Pauses the VM and writes its device state only (no RAM, no configuration section) with
    /// `xen-save-devices-state`; despite the name it works for any guest. The VM stays paused.
    public func pauseAndSaveDevices(controlSocket: URL, to file: URL) async throws {
        try await QMPClient.withConnection(socket: controlSocket) { client in
            try await client.execute("stop")
            try await client.execute("xen-save-devices-state", arguments: ["filename": .string(file.path), "live": .bool(false)])
        }
    }

    /// Makes `overlay` (an existing qcow2 whose backing file is the current disk) the disk the
    /// guest writes to; the previous file becomes read-only from here on.
    public func switchDisk(controlSocket: URL, to overlay: URL) async throws {
        try await QMPClient.withConnection(socket: controlSocket) { client in
            _ = try await client.execute("blockdev-snapshot-sync", arguments: [
                "device": .string("root"), "snapshot-file": .string(overlay.path), "format": .string("qcow2"),
                "mode": .string("existing"),
            ])
        }
    }
}
