import CladeStore
import CladeVMM
import Foundation

/// Checks a disk layer from a pack names exactly the backing file clade would have written, so a
/// hostile layer cannot make the hypervisor read a host file (`/etc/shadow` as a backing image)
/// or write to an external data file.
enum DiskLayerCheck {
    static func requireCanonicalBacking(_ file: URL, disks: any DiskChain, index: Int, rootfs: Digest, what: String) throws {
        let info: DiskLayerInfo
        do {
            info = try disks.inspect(file)
        } catch {
            throw PackError.malformed(what: what, reason: "it cannot be read as a \(disks.layerFormat) layer: \(error)")
        }
        let expected = index == 0 ? "../../blobs/sha256/\(rootfs.hex)" : "layer-\(index - 1).\(disks.layerFormat)"
        guard info.backingName == expected else {
            if let backing = info.backingName, backing.hasPrefix("/") || backing.contains("..") && backing != expected {
                throw PackError.hostPath(what: "\(what) backing file", value: backing)
            }
            throw PackError.malformed(what: what, reason: "its backing file is '\(info.backingName ?? "none")'; clade writes '\(expected)'")
        }
        if let dataFile = info.externalDataFile {
            throw PackError.hostPath(what: "\(what) external data file", value: dataFile)
        }
    }
}
