#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import CladeVMM
import Foundation

/// Lands the RAM of a QEMU migration stream in a raw memory file, and its device state in a
/// file of its own.
///
/// clade's snapshots keep guest RAM as a plain file the size of guest memory, which forks map.
/// A live branch gets that RAM from QEMU's `background-snapshot` migration (`migrate fd:`),
/// which sends every page once, as the copy reaches it or just before the guest writes it. This
/// reader follows the stream's framing (QEMU 7.2, `migration/savevm.c` and `migration/ram.c`:
/// no compression, xbzrle or multifd) far enough to apply each page of one RAM block at its
/// offset, in stream order. The device state QEMU saved when it armed write protection follows
/// the RAM as full sections; it is not parsed but copied, behind the stream's header, into a
/// file in the form `xen-save-devices-state` writes, which is how clade restores device state.
public struct MigrationStreamReader: Sendable {
    /// What a stream carried.
    public struct Totals: Sendable, Equatable {
        /// Pages written into the memory file (a page sent twice counts twice).
        public var pagesWritten = 0
        /// Pages sent as zero-filled; the file stays sparse there unless it held data.
        public var zeroPages = 0
        /// Pages of other RAM blocks (firmware, ACPI tables) read and dropped.
        public var otherBlockPages = 0
        /// Sizes of the RAM blocks the stream declared, by id.
        public var blocks: [String: UInt64] = [:]
    }

    static let fileMagic: UInt32 = 0x5145_564D
    static let fileVersion: UInt32 = 3
    static let pageSize = 4096

    enum SectionType: UInt8 {
        case start = 0x01, part = 0x02, end = 0x03, full = 0x04, subsection = 0x05, eof = 0x06
        case configuration = 0x07, command = 0x08, footer = 0x7E
    }

    struct PageFlags {
        static let zero: UInt64 = 0x02
        static let memorySize: UInt64 = 0x04
        static let page: UInt64 = 0x08
        static let endOfSection: UInt64 = 0x10
        static let continueBlock: UInt64 = 0x20
        static let mask: UInt64 = 0xFFF
    }

    /// The RAM block to land (the memory backend's id), e.g. `ram`.
    let block: String
    /// Guest RAM size; a page outside it means the stream does not describe this machine.
    let blockBytes: UInt64
    let output: Int32
    /// Where the device state goes; without it, it is drained and dropped.
    let deviceState: Int32?
    /// The memory file starts empty, so zero pages are left as holes rather than written.
    let sparseOutput: Bool
    /// Called once, when the first page arrives: QEMU sends pages only after it armed write tracking.
    let onFirstPage: @Sendable () -> Void

    /// Reads pages of `block` (of `blockBytes` bytes) and writes them into the open file `output`.
    public init(
        block: String, blockBytes: UInt64, output: Int32, deviceState: Int32? = nil, sparseOutput: Bool = false,
        onFirstPage: @escaping @Sendable () -> Void = {}
    ) {
        self.block = block
        self.blockBytes = blockBytes
        self.output = output
        self.deviceState = deviceState
        self.sparseOutput = sparseOutput
        self.onFirstPage = onFirstPage
    }

    /// Consumes `input` to its end. Throws ``VMMError/stateTransferFailed(backend:reason:)`` on
    /// anything it does not understand, so a stream it cannot follow never yields a file.
    public func land(from input: some MigrationByteSource) throws -> Totals {
        var source = input
        var totals = Totals()
        guard try source.u32() == Self.fileMagic else { throw malformed("the stream does not start with QEMU's migration magic") }
        let version = try source.u32()
        guard version == Self.fileVersion else { throw malformed("migration stream version \(version), expected \(Self.fileVersion)") }
        var sectionIDs: [UInt32: String] = [:]
        var firstPageSeen = false
        // QEMU's "same block as the last page" flag reaches across sections.
        var currentBlock: String?
        while true {
            let rawType = try source.u8()
            guard let type = SectionType(rawValue: rawType) else { throw malformed("unknown section type 0x\(String(rawType, radix: 16))") }
            switch type {
            case .configuration:
                let length = try source.u32()
                try source.skip(Int(length))
                // A configuration subsection appears only with capabilities clade does not set.
            case .start:
                let id = try source.u32()
                let name = try source.string()
                _ = try source.u32()  // instance
                _ = try source.u32()  // version
                sectionIDs[id] = name
                try readRAMSection(named: name, from: &source, block: &currentBlock, into: &totals)
                if !firstPageSeen, totals.pagesWritten + totals.zeroPages > 0 { firstPageSeen = true; onFirstPage() }
            case .part, .end:
                let id = try source.u32()
                guard let name = sectionIDs[id] else { throw malformed("a section part names section \(id), which never started") }
                try readRAMSection(named: name, from: &source, block: &currentBlock, into: &totals)
                if !firstPageSeen, totals.pagesWritten + totals.zeroPages > 0 { firstPageSeen = true; onFirstPage() }
            case .command:
                _ = try source.u16()
                let length = try source.u16()
                try source.skip(Int(length))
            case .full, .eof:
                // Device state from here on, to the end of the stream.
                guard let deviceState else {
                    try source.drain()
                    return totals
                }
                var header = [UInt8]()
                for value in [Self.fileMagic, Self.fileVersion] { header += withUnsafeBytes(of: value.bigEndian, Array.init) }
                header.append(rawType)
                try writeAll(header, to: deviceState, what: "the device state file")
                try source.copyRemaining { try writeAll($0, to: deviceState, what: "the device state file") }
                return totals
            case .subsection, .footer:
                throw malformed("unexpected section type 0x\(String(rawType, radix: 16)) between sections")
            }
        }
    }

    private func readRAMSection(named name: String, from source: inout some MigrationByteSource, block current: inout String?, into totals: inout Totals) throws {
        guard name == "ram" else { throw malformed("iterative section '\(name)' is not RAM; only plain RAM migration is supported") }
        var page = [UInt8](repeating: 0, count: Self.pageSize)
        while true {
            let header = try source.u64()
            let flags = header & PageFlags.mask
            let offset = header & ~PageFlags.mask
            if flags & PageFlags.endOfSection != 0 { break }
            if flags & PageFlags.memorySize != 0 {
                var remaining = offset
                while remaining > 0 {
                    let id = try source.string()
                    let length = try source.u64()
                    guard length <= remaining else { throw malformed("RAM block '\(id)' is larger than the total the stream declared") }
                    totals.blocks[id] = length
                    remaining -= length
                }
                guard totals.blocks[block] == blockBytes else {
                    throw malformed("the stream's RAM block '\(block)' is \(totals.blocks[block].map(String.init) ?? "absent"), expected \(blockBytes) bytes")
                }
                continue
            }
            if flags & PageFlags.continueBlock == 0 { current = try source.string() }
            guard let current else { throw malformed("a page continues a block before any block was named") }
            let ours = current == block
            if ours { guard offset + UInt64(Self.pageSize) <= blockBytes else { throw malformed("a page at offset \(offset) lies outside the \(blockBytes)-byte RAM block") } }
            if flags & PageFlags.zero != 0 {
                let fill = try source.u8()
                if ours {
                    // A zero page over data (the file may already hold a page sent earlier) must be cleared.
                    if !(sparseOutput && fill == 0) {
                        for index in page.indices { page[index] = fill }
                        try write(page, at: offset)
                    }
                    totals.zeroPages += 1
                } else { totals.otherBlockPages += 1 }
            } else if flags & PageFlags.page != 0 {
                try source.read(into: &page)
                if ours {
                    try write(page, at: offset)
                    totals.pagesWritten += 1
                } else { totals.otherBlockPages += 1 }
            } else {
                throw malformed("page flags 0x\(String(flags, radix: 16)) need a feature clade does not enable (compression, xbzrle or multifd)")
            }
        }
        guard try source.u8() == SectionType.footer.rawValue else { throw malformed("a RAM section has no footer") }
        _ = try source.u32()
    }

    private func write(_ page: [UInt8], at offset: UInt64) throws {
        let written = page.withUnsafeBytes { pwrite(output, $0.baseAddress, $0.count, off_t(offset)) }
        guard written == page.count else { throw StoreError.systemCall("pwrite", path: "the branch's memory file", errno: written < 0 ? errno : EIO) }
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer, to descriptor: Int32, what: String) throws {
        guard let base = bytes.baseAddress else { return }
        var done = 0
        while done < bytes.count {
            let count = Glibc.write(descriptor, base + done, bytes.count - done)
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { throw StoreError.systemCall("write", path: what, errno: count < 0 ? errno : EIO) }
            done += count
        }
    }

    private func writeAll(_ bytes: [UInt8], to descriptor: Int32, what: String) throws {
        try bytes.withUnsafeBytes { try writeAll($0, to: descriptor, what: what) }
    }

    private func malformed(_ reason: String) -> VMMError {
        .stateTransferFailed(backend: "qemu", reason: "live copy: \(reason)")
    }
}

/// Big-endian reads from a migration stream.
public protocol MigrationByteSource {
    /// Fills `buffer` completely; throws at the end of the stream.
    mutating func read(into buffer: inout [UInt8]) throws
    /// Reads and drops everything up to the end of the stream.
    mutating func drain() throws
    /// Hands everything up to the end of the stream to `sink`, in order.
    mutating func copyRemaining(_ sink: (UnsafeRawBufferPointer) throws -> Void) throws
}

extension MigrationByteSource {
    mutating func bytes(_ count: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        try read(into: &buffer)
        return buffer
    }

    mutating func integer(_ width: Int) throws -> UInt64 {
        try bytes(width).reduce(0) { ($0 << 8) | UInt64($1) }
    }

    mutating func u8() throws -> UInt8 { UInt8(try integer(1)) }
    mutating func u16() throws -> UInt16 { UInt16(try integer(2)) }
    mutating func u32() throws -> UInt32 { UInt32(try integer(4)) }
    mutating func u64() throws -> UInt64 { try integer(8) }
    mutating func skip(_ count: Int) throws { _ = try bytes(count) }

    /// A length byte and that many bytes of name.
    mutating func string() throws -> String {
        let length = Int(try u8())
        return String(decoding: try bytes(length), as: UTF8.self)
    }
}

/// A migration stream read from a descriptor (a socket or the file QEMU migrated into), buffered.
public struct DescriptorByteSource: MigrationByteSource {
    let descriptor: Int32
    private var buffer = [UInt8](repeating: 0, count: 1 << 20)
    private var start = 0
    private var end = 0

    public init(descriptor: Int32) { self.descriptor = descriptor }

    public mutating func read(into target: inout [UInt8]) throws {
        var filled = 0
        while filled < target.count {
            if start == end { guard try refill() else { throw VMMError.stateTransferFailed(backend: "qemu", reason: "live copy: the migration stream ended early") } }
            let count = min(end - start, target.count - filled)
            target.replaceSubrange(filled..<(filled + count), with: buffer[start..<(start + count)])
            start += count
            filled += count
        }
    }

    public mutating func drain() throws {
        start = end
        while try refill() { start = end }
    }

    public mutating func copyRemaining(_ sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        repeat {
            if start < end { try buffer.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[start..<end])) } }
            start = end
        } while try refill()
    }

    private mutating func refill() throws -> Bool {
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw StoreError.systemCall("recv", path: "the migration stream", errno: errno) }
            start = 0
            end = count
            return count > 0
        }
    }
}
