#if canImport(Glibc)
import Glibc
#endif
import CZstd
import Foundation

/// zstd compression with fixed parameters, so the same bytes always compress to the same blob
/// (and so the same digest) on every host: multithreaded output from libzstd does not depend on
/// the number of workers, only on the level and on whether workers are used at all.
public final class ZstdCompressor {
    private let context: OpaquePointer
    public let level: Int32

    /// `workers` ≥ 1 threads, whose output is identical for any count; or 0 for libzstd's
    /// single-threaded frame layout (used for memory chunks, which are compressed in parallel
    /// with each other instead). Each choice is deterministic; a blob kind must keep to one.
    public init(level: Int32 = 3, workers: Int) throws {
        guard let context = ZSTD_createCCtx() else { throw PackError.compression("cannot allocate a compression context") }
        self.context = context
        self.level = level
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level))
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1))
        if workers > 0 {
            try check(ZSTD_CCtx_setParameter(context, ZSTD_c_nbWorkers, Int32(workers)))
        }
    }

    deinit { ZSTD_freeCCtx(context) }

    private func check(_ code: Int) throws {
        if ZSTD_isError(code) != 0 { throw PackError.compression(String(cString: ZSTD_getErrorName(code))) }
    }

    /// Compresses one whole buffer (a memory chunk, a small file) into a fresh array.
    public func compress(_ input: UnsafeRawBufferPointer) throws -> [UInt8] {
        try check(ZSTD_CCtx_reset(context, ZSTD_reset_session_only))
        try check(ZSTD_CCtx_setPledgedSrcSize(context, UInt64(input.count)))
        var output = [UInt8](repeating: 0, count: ZSTD_compressBound(input.count))
        var produced = 0
        try output.withUnsafeMutableBytes { out in
            var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
            var outBuffer = ZSTD_outBuffer(dst: out.baseAddress, size: out.count, pos: 0)
            while true {
                let remaining = ZSTD_compressStream2(context, &outBuffer, &inBuffer, ZSTD_e_end)
                try check(remaining)
                if remaining == 0 { break }
            }
            produced = outBuffer.pos
        }
        output.removeSubrange(produced...)
        return output
    }

    /// Streams `input` (of `totalSize` bytes, fed by `read`) through zstd into `write`.
    /// `read` fills the buffer and returns the byte count, 0 at the end.
    public func compressStream(
        totalSize: Int64, read: (UnsafeMutableRawBufferPointer) throws -> Int, write: (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        try check(ZSTD_CCtx_reset(context, ZSTD_reset_session_only))
        try check(ZSTD_CCtx_setPledgedSrcSize(context, UInt64(totalSize)))
        let inCapacity = 4 << 20
        let outCapacity = ZSTD_CStreamOutSize()
        let inStorage = UnsafeMutableRawBufferPointer.allocate(byteCount: inCapacity, alignment: 16)
        let outStorage = UnsafeMutableRawBufferPointer.allocate(byteCount: outCapacity, alignment: 16)
        defer {
            inStorage.deallocate()
            outStorage.deallocate()
        }
        var finished = false
        while !finished {
            let count = try read(inStorage)
            let mode = count == 0 ? ZSTD_e_end : ZSTD_e_continue
            var inBuffer = ZSTD_inBuffer(src: inStorage.baseAddress, size: count, pos: 0)
            repeat {
                var outBuffer = ZSTD_outBuffer(dst: outStorage.baseAddress, size: outCapacity, pos: 0)
                let remaining = ZSTD_compressStream2(context, &outBuffer, &inBuffer, mode)
                try check(remaining)
                if outBuffer.pos > 0 { try write(UnsafeRawBufferPointer(rebasing: outStorage[0..<outBuffer.pos])) }
                if mode == ZSTD_e_end {
                    finished = remaining == 0
                } else if inBuffer.pos == inBuffer.size {
                    break
                }
            } while !finished
        }
    }
}

/// Streaming zstd decompression that refuses to produce more than a declared number of bytes,
/// so a small blob cannot expand into a full disk.
public final class ZstdDecompressor {
    private let context: OpaquePointer
    private let limit: Int64
    private let what: String
    public private(set) var produced: Int64 = 0
    private var frameComplete = false
    private let outStorage: UnsafeMutableRawBufferPointer

    public init(limit: Int64, what: String) throws {
        guard let context = ZSTD_createDCtx() else { throw PackError.compression("cannot allocate a decompression context") }
        self.context = context
        self.limit = limit
        self.what = what
        outStorage = UnsafeMutableRawBufferPointer.allocate(byteCount: ZSTD_DStreamOutSize(), alignment: 16)
    }

    deinit {
        ZSTD_freeDCtx(context)
        outStorage.deallocate()
    }

    /// Feeds compressed bytes; decompressed bytes go to `output` in order.
    public func feed(_ input: UnsafeRawBufferPointer, output: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard input.count > 0 else { return }
        var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var hint = 1
        while inBuffer.pos < inBuffer.size {
            hint = try step(&inBuffer, output: output)
        }
        // The decoder may still hold output for this input when the output buffer filled up.
        while hint != 0 {
            var empty = ZSTD_inBuffer(src: nil, size: 0, pos: 0)
            let before = produced
            hint = try step(&empty, output: output)
            if produced == before { break }
        }
        frameComplete = hint == 0
    }

    private func step(_ inBuffer: inout ZSTD_inBuffer, output: (UnsafeRawBufferPointer) throws -> Void) throws -> Int {
        var outBuffer = ZSTD_outBuffer(dst: outStorage.baseAddress, size: outStorage.count, pos: 0)
        let hint = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
        if ZSTD_isError(hint) != 0 {
            throw PackError.corruptCompression(what: what, reason: String(cString: ZSTD_getErrorName(hint)))
        }
        try emit(outBuffer.pos, output: output)
        return hint
    }

    private func emit(_ count: Int, output: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard count > 0 else { return }
        produced += Int64(count)
        if produced > limit {
            throw PackError.sizeMismatch(what: "\(what) (decompressed)", declared: limit, actual: produced)
        }
        try output(UnsafeRawBufferPointer(rebasing: outStorage[0..<count]))
    }

    /// Throws unless the input ended exactly at the end of a frame.
    public func finish() throws {
        guard frameComplete else { throw PackError.corruptCompression(what: what, reason: "the data ends in the middle of a frame") }
    }
}
