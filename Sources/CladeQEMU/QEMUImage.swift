import CladeStore
import CladeVMM
import Foundation

/// qcow2 disk chains through `qemu-img`: the only place clade runs it.
public struct QEMUImage: DiskChain {
    public let layerFormat = "qcow2"

    public init() {}

    public func createOverlay(at layer: URL, backingName: String, backingFormat: BackingFormat) throws {
        try run("create a disk layer", layer, [
            "create", "-q", "-f", "qcow2", "-F", backingFormat == .raw ? "raw" : "qcow2", "-b", backingName, layer.path,
        ], in: layer.deletingLastPathComponent())
    }

    public func flatten(_ top: URL, into output: URL, backingName: String) throws {
        try run("flatten the disk chain of", top, [
            "convert", "-q", "-O", "qcow2", "-B", backingName, "-F", "raw", top.path, output.path,
        ], in: output.deletingLastPathComponent())
    }

    public func inspect(_ layer: URL) throws -> DiskLayerInfo {
        let result = try ExternalCommand("qemu-img", ["info", "--output=json", "-f", "qcow2", layer.path]).run()
        guard result.status == 0 else {
            throw VMMError.diskFailed(operation: "read the qcow2 header of", path: layer.path, reason: result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] else {
            throw VMMError.diskFailed(operation: "read the qcow2 header of", path: layer.path, reason: "qemu-img printed no image information")
        }
        let specific = (object["format-specific"] as? [String: Any])?["data"] as? [String: Any]
        return DiskLayerInfo(
            format: object["format"] as? String ?? "unknown", backingName: object["backing-filename"] as? String,
            backingFormat: object["backing-filename-format"] as? String, externalDataFile: specific?["data-file"] as? String)
    }

    public func check(_ layer: URL) throws {
        try run("check", layer, ["check", "-q", "-f", "qcow2", layer.path], in: layer.deletingLastPathComponent())
    }

    public func createBlank(at file: URL, megabytes: Int) throws {
        try run("create", file, ["create", "-q", "-f", "qcow2", file.path, "\(megabytes)M"], in: file.deletingLastPathComponent())
    }

    private func run(_ operation: String, _ path: URL, _ arguments: [String], in directory: URL) throws {
        guard ExternalCommand.locate("qemu-img") != nil else {
            throw VMMError.backendMissing(backend: "qemu", program: "qemu-img", fix: QEMUDriver.installFix)
        }
        let result = try ExternalCommand("qemu-img", arguments, currentDirectory: directory).run()
        guard result.status == 0 else {
            throw VMMError.diskFailed(operation: operation, path: path.path, reason: result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }
}
