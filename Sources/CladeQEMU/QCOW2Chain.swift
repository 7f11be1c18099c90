#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import CladeVMM
import Foundation

/// Reads a qcow2 disk's chain of backing files from the images' headers (no `qemu-img`, a few
/// small reads per layer): what a VMM that starts inside a pivoted jail must find there.
enum QCOW2Chain {
    /// Longest chain followed; deeper chains are refused rather than walked without end.
    static let maximumDepth = 64

    /// The backing files below `disk`, nearest first, resolved the way QEMU resolves them
    /// (relative to the directory of the image that names them).
    static func files(below disk: URL) throws -> [URL] {
        var files: [URL] = []
        var current = disk
        for _ in 0..<maximumDepth {
            guard let backing = try backingName(of: current) else { return files }
            let next = backing.hasPrefix("/")
                ? URL(fileURLWithPath: backing)
                : current.deletingLastPathComponent().appendingPathComponent(backing)
            files.append(next.standardizedFileURL)
            current = next
        }
        throw VMMError.launchFailed(backend: "qemu", reason: "\(disk.path) has a backing chain deeper than \(maximumDepth) layers")
    }

    /// The backing file name a qcow2 header records, or nil for an image without one (or one that
    /// is not qcow2: a raw base).
    private static func backingName(of image: URL) throws -> String? {
        let fd = try FileSystem.open(image, flags: O_RDONLY)
        defer { close(fd) }
        var header = [UInt8](repeating: 0, count: 20)
        let count = header.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 20, 0) }
        guard count == 20, header[0...3] == [0x51, 0x46, 0x49, 0xFB] else { return nil }
        let offset = header[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let size = header[16..<20].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard offset != 0, size != 0 else { return nil }
        // qcow2 limits the name to 1023 bytes.
        guard size < 1024, offset < 1 << 20 else {
            throw VMMError.launchFailed(backend: "qemu", reason: "\(image.path) names a backing file out of bounds (offset \(offset), \(size) bytes)")
        }
        var name = [UInt8](repeating: 0, count: Int(size))
        let read = name.withUnsafeMutableBytes { pread(fd, $0.baseAddress, Int(size), off_t(offset)) }
        guard read == Int(size) else { throw StoreError.systemCall("read the backing name of", path: image.path, errno: errno) }
        return String(decoding: name, as: UTF8.self)
    }
}
