#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import Foundation

/// Finds and reads the guest RAM pages a restored VM has written.
///
/// A fork maps its memory file `MAP_PRIVATE` (`share=off`): pages it never wrote are the file's
/// page cache; each page it wrote became a private anonymous copy. In `/proc/PID/pagemap` (8
/// bytes a page) such a page is present (bit 63) or swapped (bit 62) and not file-backed (bit 61).
/// The set is cumulative since the VM was restored from its memory file.
public struct DirtyPages: Sendable {
    public static let pageSize = 4096

    /// Page indexes (offsets / page size into the memory file) that the guest wrote.
    public let pages: [Int]
    /// Where the RAM mapping starts in the hypervisor process's address space.
    public let mappingStart: UInt64
    /// Length of the RAM mapping in bytes.
    public let mappingLength: Int

    public init(pages: [Int], mappingStart: UInt64, mappingLength: Int) {
        self.pages = pages
        self.mappingStart = mappingStart
        self.mappingLength = mappingLength
    }

    /// No pages (nothing to capture).
    public static let none = DirtyPages(pages: [], mappingStart: 0, mappingLength: 0)

    /// Scans the mapping of `memoryFile` in process `pid`.
    public static func scan(pid: Int32, memoryFile: URL) throws -> DirtyPages {
        let (start, length) = try findMapping(pid: pid, path: memoryFile.path)
        let pagemap = try FileSystem.open(URL(fileURLWithPath: "/proc/\(pid)/pagemap"), flags: O_RDONLY)
        defer { close(pagemap) }
        let pageCount = length / pageSize
        var pages: [Int] = []
        let batch = 65536
        var entries = [UInt64](repeating: 0, count: batch)
        var index = 0
        while index < pageCount {
            let count = min(batch, pageCount - index)
            let offset = off_t((start / UInt64(pageSize) + UInt64(index)) * 8)
            let read = entries.withUnsafeMutableBytes { pread(pagemap, $0.baseAddress, count * 8, offset) }
            guard read == count * 8 else { throw StoreError.systemCall("read", path: "/proc/\(pid)/pagemap", errno: read < 0 ? errno : EIO) }
            for entryIndex in 0..<count {
                let entry = entries[entryIndex]
                let presentOrSwapped = entry & (1 << 63) != 0 || entry & (1 << 62) != 0
                let fileBacked = entry & (1 << 61) != 0
                if presentOrSwapped && !fileBacked { pages.append(index + entryIndex) }
            }
            index += count
        }
        return DirtyPages(pages: pages, mappingStart: start, mappingLength: length)
    }

    /// Every page of the mapping, for a full capture.
    public static func all(pid: Int32, memoryFile: URL) throws -> DirtyPages {
        let (start, length) = try findMapping(pid: pid, path: memoryFile.path)
        return DirtyPages(pages: Array(0..<(length / pageSize)), mappingStart: start, mappingLength: length)
    }

    /// Maps every page of `memoryFile`'s mapping in process `pid` into its page tables, by reading
    /// it through `/proc/PID/mem` (which faults pages in for the process); what it reads is dropped.
    public static func mapAllPages(pid: Int32, memoryFile: URL) throws {
        let (start, length) = try findMapping(pid: pid, path: memoryFile.path)
        let memory = try FileSystem.open(URL(fileURLWithPath: "/proc/\(pid)/mem"), flags: O_RDONLY)
        defer { close(memory) }
        let chunk = 1 << 20
        var buffer = [UInt8](repeating: 0, count: chunk)
        var offset = 0
        while offset < length {
            let count = min(chunk, length - offset)
            let got = buffer.withUnsafeMutableBytes { pread(memory, $0.baseAddress, count, off_t(start + UInt64(offset))) }
            guard got == count else { throw StoreError.systemCall("read", path: "/proc/\(pid)/mem", errno: got < 0 ? errno : EIO) }
            offset += count
        }
    }

    /// Reads the pages' current contents from `/proc/PID/mem` (call while the VM is paused).
    public func read(pid: Int32) throws -> [UInt8] {
        let memory = try FileSystem.open(URL(fileURLWithPath: "/proc/\(pid)/mem"), flags: O_RDONLY)
        defer { close(memory) }
        var buffer = [UInt8](repeating: 0, count: pages.count * Self.pageSize)
        try buffer.withUnsafeMutableBytes { raw in
            guard let base = raw.baseAddress else { return }
            for run in runs {
                let bytes = run.count * Self.pageSize
                let address = off_t(mappingStart + UInt64(pages[run.first] * Self.pageSize))
                let got = pread(memory, base + run.first * Self.pageSize, bytes, address)
                guard got == bytes else { throw StoreError.systemCall("read", path: "/proc/\(pid)/mem", errno: got < 0 ? errno : EIO) }
            }
        }
        return buffer
    }

    /// Writes `contents` (as returned by ``read(pid:)``) at the pages' offsets in `file`.
    /// Zero pages are written as zeros, never punched out: the file is layered on a base.
    public func write(_ contents: [UInt8], into file: URL) throws {
        let fd = try FileSystem.open(file, flags: O_WRONLY)
        defer { close(fd) }
        guard contents.count == pages.count * Self.pageSize else {
            throw StoreError.systemCall("write (page contents do not match the page list)", path: file.path, errno: EINVAL)
        }
        try contents.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }
            for run in runs {
                let bytes = run.count * Self.pageSize
                let written = pwrite(fd, base + run.first * Self.pageSize, bytes, off_t(pages[run.first] * Self.pageSize))
                guard written == bytes else { throw StoreError.systemCall("write", path: file.path, errno: written < 0 ? errno : EIO) }
            }
        }
        guard fsync(fd) == 0 else { throw StoreError.systemCall("fsync", path: file.path, errno: errno) }
    }

    /// Runs of consecutive pages, as (index into `pages`, page count), at most 16 MiB each: one
    /// pread or pwrite per run.
    private var runs: [(first: Int, count: Int)] {
        var result: [(first: Int, count: Int)] = []
        var position = 0
        while position < pages.count {
            var end = position + 1
            while end < pages.count, pages[end] == pages[end - 1] + 1, end - position < 4096 { end += 1 }
            result.append((position, end - position))
            position = end
        }
        return result
    }

    static func findMapping(pid: Int32, path given: String) throws -> (UInt64, Int) {
        // The kernel names a mapping by its file's real path (a memory tier is a symlink away).
        let path = URL(fileURLWithPath: given).resolvingSymlinksInPath().path
        let maps = String(decoding: try FileSystem.readProcFile("/proc/\(pid)/maps"), as: UTF8.self)
        var best: (UInt64, Int)?
        for line in maps.split(separator: "\n") where line.hasSuffix(" " + path) {
            let range = line.split(separator: " ").first?.split(separator: "-") ?? []
            guard range.count == 2, let start = UInt64(range[0], radix: 16), let end = UInt64(range[1], radix: 16) else { continue }
            let length = Int(end - start)
            if let current = best, current.1 >= length { continue }
            best = (start, length)
        }
        guard let best else {
            throw StoreError.systemCall("find the guest RAM mapping of \(path) in /proc/\(pid)/maps", path: path, errno: ENOENT)
        }
        return best
    }
}
