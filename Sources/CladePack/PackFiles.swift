import CladeModel
import CladeStore
import Foundation

extension Packer {
    /// Packs into `output`: a layout directory, or one tar file when the name ends in `.tar`.
    public func pack(tag: String, ancestors: Bool = true, to output: URL, progress: PackProgress? = nil) throws -> PackReport {
        guard output.pathExtension == "tar" else { return try pack(tag: tag, ancestors: ancestors, into: output, progress: progress) }
        if try FileSystem.exists(output) {
            throw PackError.notALayout(path: output.path, reason: "the file already exists; remove it or choose another name")
        }
        let staging = try home.makeTemporaryDirectory(prefix: "pack")
        defer { try? FileSystem.remove(staging) }
        let journal = OperationJournal(home: home)
        let entry = try journal.begin(kind: .pack, subject: tag, paths: [staging])
        defer { journal.end(entry) }
        var report = try pack(tag: tag, ancestors: ancestors, into: staging, progress: progress)
        progress?("writing \(output.lastPathComponent)", report.contentBytes, report.contentBytes)
        try TarArchive.write(layout: staging, to: output)
        report.path = output.path
        return report
    }
}

extension Unpacker {
    /// Unpacks a layout directory or a tar file.
    public func unpack(from path: URL, options: UnpackOptions = UnpackOptions(), progress: PackProgress? = nil) throws -> UnpackReport {
        guard let status = try FileSystem.status(of: path) else {
            throw PackError.notALayout(path: path.path, reason: "nothing exists there")
        }
        if status.isDirectory { return try unpack(layout: path, options: options, progress: progress) }
        guard status.isRegularFile else { throw PackError.notALayout(path: path.path, reason: "it is neither a directory nor a tar file") }
        let extracted = try home.makeTemporaryDirectory(prefix: "unpack")
        defer { try? FileSystem.remove(extracted) }
        progress?("reading \(path.lastPathComponent)", 0, status.size)
        let free = try FileSystem.freeBytes(at: home.root)
        try TarArchive.extract(path, into: extracted, byteLimit: max(0, free - (64 << 20)))
        return try unpack(layout: extracted, options: options, progress: progress)
    }
}
