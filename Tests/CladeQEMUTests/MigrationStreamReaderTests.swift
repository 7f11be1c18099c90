#if canImport(Glibc)
import Glibc
#endif
import CladeStore
@testable import CladeQEMU
import CladeVMM
import Foundation
import Testing

/// A migration stream in memory.
struct BytesSource: MigrationByteSource {
    var bytes: [UInt8]
    var offset = 0

    mutating func read(into buffer: inout [UInt8]) throws {
        guard offset + buffer.count <= bytes.count else { throw VMMError.stateTransferFailed(backend: "test", reason: "ended early") }
        buffer.replaceSubrange(0..<buffer.count, with: bytes[offset..<(offset + buffer.count)])
        offset += buffer.count
    }

    mutating func drain() throws { offset = bytes.count }
    mutating func copyRemaining(_ sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        try bytes[offset...].withUnsafeBytes { try sink($0) }
        offset = bytes.count
    }
}

/// Builds streams shaped like QEMU 7.2's precopy output.
struct StreamBuilder {
    var bytes: [UInt8] = []
    mutating func u8(_ value: UInt8) { bytes.append(value) }
    mutating func u32(_ value: UInt32) { for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8((value >> UInt32(shift)) & 0xFF)) } }
    mutating func u64(_ value: UInt64) { for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8((value >> UInt64(shift)) & 0xFF)) } }
    mutating func name(_ text: String) { u8(UInt8(text.utf8.count)); bytes += Array(text.utf8) }
    mutating func header() { u32(0x5145_564D); u32(3); u8(0x07); u32(7); bytes += Array("microvm".utf8) }
    mutating func footer(_ section: UInt32) { u8(0x7E); u32(section) }
    mutating func start(blocks: [(String, UInt64)]) {
        u8(0x01); u32(2); name("ram"); u32(0); u32(4)
        u64(blocks.reduce(0) { $0 + $1.1 } | 0x04)
        for (id, length) in blocks { name(id); u64(length) }
        u64(0x10)
        footer(2)
    }
    mutating func page(_ block: String?, at offset: UInt64, fill: UInt8) {
        u64(offset | 0x08 | (block == nil ? 0x20 : 0))
        if let block { name(block) }
        bytes += [UInt8](repeating: fill, count: 4096)
    }
    mutating func zero(_ block: String?, at offset: UInt64) {
        u64(offset | 0x02 | (block == nil ? 0x20 : 0))
        if let block { name(block) }
        u8(0)
    }
    mutating func part(_ kind: UInt8 = 0x02, _ body: (inout StreamBuilder) -> Void) {
        u8(kind); u32(2)
        body(&self)
        u64(0x10)
        footer(2)
    }
    mutating func devices() { u8(0x04); u32(3); name("timer"); u32(0); u32(2); bytes += [1, 2, 3, 4]; u8(0x06) }
}

@Suite struct MigrationStreamReaderTests {
    let ramBytes: UInt64 = 4 * 4096

    func land(_ stream: StreamBuilder) throws -> (MigrationStreamReader.Totals, [UInt8]) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("stream-\(UUID().uuidString)").path
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        defer { close(fd); unlink(path) }
        #expect(ftruncate(fd, off_t(ramBytes)) == 0)
        let totals = try MigrationStreamReader(block: "ram", blockBytes: ramBytes, output: fd).land(from: BytesSource(bytes: stream.bytes))
        var contents = [UInt8](repeating: 0, count: Int(ramBytes))
        #expect(pread(fd, &contents, contents.count, 0) == contents.count)
        return (totals, contents)
    }

    @Test func laterPagesWinAndOtherBlocksAreDropped() throws {
        var stream = StreamBuilder()
        stream.header()
        stream.start(blocks: [("ram", ramBytes), ("pc.bios", 4096)])
        stream.part {
            $0.page("ram", at: 0, fill: 1)
            $0.page(nil, at: 4096, fill: 2)  // the same block, across the flag
            $0.page("pc.bios", at: 0, fill: 9)
            $0.page("ram", at: 2 * 4096, fill: 3)
        }
        // A later pass: page 0 dirtied again, page 2 became zero.
        stream.part(0x03) {
            $0.page("ram", at: 0, fill: 7)
            $0.zero(nil, at: 2 * 4096)
        }
        stream.devices()
        let (totals, memory) = try land(stream)
        #expect(memory[0] == 7 && memory[4095] == 7)
        #expect(memory[4096] == 2)
        #expect(memory[2 * 4096] == 0 && memory[3 * 4096 - 1] == 0)
        #expect(memory[3 * 4096] == 0)
        #expect(totals.pagesWritten == 4 && totals.zeroPages == 1 && totals.otherBlockPages == 1)
        #expect(totals.blocks == ["ram": ramBytes, "pc.bios": 4096])
    }

    @Test func streamsItCannotFollowAreRefused() throws {
        var wrongSize = StreamBuilder()
        wrongSize.header()
        wrongSize.start(blocks: [("ram", ramBytes * 2)])
        #expect(throws: VMMError.self) { try land(wrongSize) }

        var outside = StreamBuilder()
        outside.header()
        outside.start(blocks: [("ram", ramBytes)])
        outside.part { $0.page("ram", at: ramBytes, fill: 1) }
        #expect(throws: VMMError.self) { try land(outside) }

        var compressed = StreamBuilder()
        compressed.header()
        compressed.start(blocks: [("ram", ramBytes)])
        compressed.u8(0x02); compressed.u32(2); compressed.u64(0x100); compressed.name("ram")
        #expect(throws: VMMError.self) { try land(compressed) }

        var truncated = StreamBuilder()
        truncated.header()
        truncated.start(blocks: [("ram", ramBytes)])
        truncated.part { $0.page("ram", at: 0, fill: 1) }
        truncated.bytes.removeLast(100)
        #expect(throws: VMMError.self) { try land(truncated) }

        var notQEMU = StreamBuilder()
        notQEMU.u32(0xDEAD_BEEF)
        #expect(throws: VMMError.self) { try land(notQEMU) }
    }

    @Test func deviceStateIsCopiedBehindTheHeaderAndZeroPagesStayHoles() throws {
        var stream = StreamBuilder()
        stream.header()
        stream.start(blocks: [("ram", ramBytes)])
        stream.part {
            $0.page("ram", at: 0, fill: 5)
            $0.zero(nil, at: 4096)
        }
        let deviceStart = stream.bytes.count
        stream.devices()
        stream.bytes += [0x06, 0, 0, 0, 2, 0x7B, 0x7D]  // a trailing description, kept as QEMU wrote it
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stream-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let memory = open(directory.appendingPathComponent("memory").path, O_RDWR | O_CREAT, 0o600)
        let devices = open(directory.appendingPathComponent("devices").path, O_RDWR | O_CREAT, 0o600)
        defer { close(memory); close(devices) }
        #expect(ftruncate(memory, off_t(ramBytes)) == 0)
        let firstPages = Locked(0)
        let totals = try MigrationStreamReader(
            block: "ram", blockBytes: ramBytes, output: memory, deviceState: devices, sparseOutput: true, onFirstPage: { firstPages.withLock { $0 += 1 } }
        ).land(from: BytesSource(bytes: stream.bytes))
        #expect(totals.pagesWritten == 1 && totals.zeroPages == 1)
        #expect(firstPages.current == 1)
        var status = stat()
        #expect(fstat(memory, &status) == 0)
        #expect(status.st_blocks * 512 == 4096)  // only the data page was written
        let saved = try Data(contentsOf: directory.appendingPathComponent("devices"))
        let expected = [0x51, 0x45, 0x56, 0x4D, 0, 0, 0, 3] + stream.bytes[deviceStart...]
        #expect([UInt8](saved) == Array(expected))
    }
}
