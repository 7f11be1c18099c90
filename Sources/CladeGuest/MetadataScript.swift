import CladeStore
import Foundation

/// The debugfs commands that give an image's inodes the owners, modes, extended attributes
/// and device nodes an unpacked image describes (see `RootMetadata`). Commands come in path
/// order, so the same metadata always yields the same image bytes.
struct MetadataScript {
    let metadata: RootMetadata
    /// Where extended-attribute values are written for `ea_set -f`.
    let work: URL

    /// `existing` are the paths mke2fs copied, `/`-prefixed and sorted.
    func lines(existing: [String]) throws -> [String] {
        var lines: [String] = []
        for (path, device) in metadata.devices.sorted(by: { $0.key < $1.key }) {
            // debugfs makes a node in its current directory, under a plain name.
            let slash = path.lastIndex(of: "/")
            let directory = slash.map { "/" + path[..<$0] } ?? "/"
            let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
            lines.append("cd \"\(directory)\"")
            lines.append("mknod \"\(name)\" \(device.isBlock ? "b" : "c") \(device.major) \(device.minor)")
            lines.append("cd /")
        }
        let described = (["/"] + existing + metadata.devices.keys.sorted().map { "/" + $0 })
        var valueIndex = 0
        for path in described {
            let key = path == "/" ? "" : String(path.dropFirst())
            guard let attributes = metadata.attributes[key] else { continue }
            lines.append("sif \"\(path)\" mode 0\(String(attributes.mode, radix: 8))")
            lines.append("sif \"\(path)\" uid \(attributes.uid)")
            lines.append("sif \"\(path)\" gid \(attributes.gid)")
            for (name, value) in attributes.xattrs.sorted(by: { $0.key < $1.key }) {
                guard !name.contains("\""), !name.contains(" ") else { continue }
                let file = work.appendingPathComponent("xattr-\(valueIndex)")
                valueIndex += 1
                try Data(value).write(to: file)
                lines.append("ea_set -f \"\(file.path)\" \"\(path)\" \"\(name)\"")
            }
        }
        return lines
    }
}
