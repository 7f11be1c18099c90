import CladeStore
import Foundation

/// Where each fixed-size chunk of a snapshot's root filesystem sits inside its packed blob.
///
/// The rootfs blob is a run of independent zstd frames, one per chunk, so it is still one valid
/// zstd stream that any reader decompresses whole; this index, an optional layer beside it, lets
/// a lazy fork fetch one frame by HTTP range and check the chunk it decompresses to against the
/// digest here before a guest reads a byte of it.
public struct RootfsIndex: Codable, Sendable, Equatable {
    public struct Frame: Codable, Sendable, Equatable {
        /// Byte range of the frame in the compressed blob.
        public var offset: Int64
        public var size: Int64
        /// SHA-256 of the chunk the frame decompresses to; nil when the chunk is all zeros (a
        /// lazy reader serves zeros without fetching it).
        public var digest: String?
    }

    /// The rootfs blob this index describes, and what it decompresses to.
    public var blob: String
    public var blobSize: Int64
    public var contentDigest: String
    public var contentSize: Int64
    public var chunkSize: Int64
    public var frames: [Frame]

    enum CodingKeys: String, CodingKey {
        case blob, frames
        case blobSize = "blob_size"
        case contentDigest = "content_digest"
        case contentSize = "content_size"
        case chunkSize = "chunk_size"
    }

    /// The largest index a reader accepts (a 1 TiB rootfs at 1 MiB chunks, with room to spare).
    static let maxBytes: Int64 = 256 << 20
    /// The largest compressed frame a chunk may need.
    static func maxFrameSize(chunkSize: Int64) -> Int64 { chunkSize + (1 << 20) }

    /// Checks the index against the rootfs layer it claims to describe: the same blob, frames
    /// that tile it exactly in chunk order, one frame per chunk of the declared content, well
    /// formed digests. A hostile index can then make a reader fetch only ranges of that blob.
    public func validate(rootfs: Descriptor, contentDigest expected: Digest, contentSize expectedSize: Int64, what: String) throws {
        guard blob == rootfs.digest.description, blobSize == rootfs.size else {
            throw PackError.malformed(what: what, reason: "it describes blob \(blob) of \(blobSize) bytes, not the rootfs layer \(rootfs.digest) of \(rootfs.size)")
        }
        guard contentDigest == expected.description, contentSize == expectedSize else {
            throw PackError.malformed(what: what, reason: "it describes content \(contentDigest) of \(contentSize) bytes, not the rootfs \(expected) of \(expectedSize)")
        }
        guard chunkSize >= 4096, chunkSize <= 64 << 20, chunkSize & (chunkSize - 1) == 0 else {
            throw PackError.malformed(what: what, reason: "chunk size \(chunkSize) is not a power of two between 4 KiB and 64 MiB")
        }
        let expectedFrames = (contentSize + chunkSize - 1) / chunkSize
        guard Int64(frames.count) == expectedFrames else {
            throw PackError.malformed(what: what, reason: "it lists \(frames.count) frames for \(contentSize) bytes in chunks of \(chunkSize); \(expectedFrames) are needed")
        }
        var next: Int64 = 0
        for (number, frame) in frames.enumerated() {
            guard frame.offset == next, frame.size > 0, frame.size <= Self.maxFrameSize(chunkSize: chunkSize) else {
                throw PackError.malformed(what: what, reason: "frame \(number) at \(frame.offset) of \(frame.size) bytes does not follow the previous frame within bounds")
            }
            if let digest = frame.digest, (try? Digest(parsing: digest)) == nil {
                throw PackError.malformed(what: what, reason: "frame \(number) has digest '\(digest)', not sha256:<64 hex>")
            }
            next += frame.size
        }
        guard next == blobSize else {
            throw PackError.malformed(what: what, reason: "its frames cover \(next) bytes of a \(blobSize)-byte blob")
        }
    }
}
