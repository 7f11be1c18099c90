import Crypto
import Foundation

/// A SHA-256 content digest written `sha256:<hex>`.
public struct Digest: Hashable, Codable, Sendable, CustomStringConvertible, Comparable {
    /// 64 lowercase hex digits.
    public let hex: String

    public init(hex: String) throws {
        guard hex.count == 64, hex.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
            throw StoreError.invalidDigest(hex)
        }
        self.hex = hex
    }

    /// Parses `sha256:<hex>`; anything else is refused.
    public init(parsing text: String) throws {
        guard text.hasPrefix("sha256:") else { throw StoreError.invalidDigest(text) }
        try self.init(hex: String(text.dropFirst("sha256:".count)))
    }

    /// Wraps a finished SHA-256 computation.
    public init(_ digest: SHA256.Digest) {
        self.hex = digest.map { String(format: "%02x", $0) }.joined()
    }

    public var description: String { "sha256:\(hex)" }
    /// The first 12 hex digits, for display.
    public var short: String { String(hex.prefix(12)) }

    public static func < (lhs: Digest, rhs: Digest) -> Bool { lhs.hex < rhs.hex }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        try self.init(parsing: text)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    /// The digest of `bytes`.
    public static func of(_ bytes: some DataProtocol) -> Digest {
        Digest(SHA256.hash(data: bytes))
    }

    /// Streams a file through SHA-256; returns the digest and the byte count.
    public static func ofFile(at url: URL) throws -> (digest: Digest, size: Int64) {
        var hasher = SHA256()
        let size = try FileSystem.forEachChunk(of: url) { chunk in hasher.update(bufferPointer: chunk) }
        return (Digest(hasher.finalize()), size)
    }
}

/// SHA-256 over bytes that arrive in pieces.
public struct DigestHasher {
    private var hasher = SHA256()
    public init() {}
    public mutating func update(_ bytes: UnsafeRawBufferPointer) { hasher.update(bufferPointer: bytes) }
    public func finalize() -> Digest { Digest(hasher.finalize()) }
}
