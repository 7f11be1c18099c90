import CLibCrypto
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

    /// Wraps the 32 bytes of a finished SHA-256 computation.
    init(sha256 bytes: [UInt8]) {
        let digits = Array("0123456789abcdef".utf8)
        var text = [UInt8]()
        text.reserveCapacity(64)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        self.hex = String(decoding: text, as: UTF8.self)
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
        var hasher = DigestHasher()
        for region in bytes.regions { region.withUnsafeBytes { hasher.update($0) } }
        return hasher.finalize()
    }

    /// Streams a file through SHA-256; returns the digest and the byte count.
    public static func ofFile(at url: URL) throws -> (digest: Digest, size: Int64) {
        var hasher = DigestHasher()
        let size = try FileSystem.forEachChunk(of: url) { chunk in hasher.update(chunk) }
        return (hasher.finalize(), size)
    }
}

/// SHA-256 over bytes that arrive in pieces. A value: a copy carries on from where it was taken.
public struct DigestHasher {
    private var context = SHA256_CTX()
    public init() { SHA256_Init(&context) }
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        SHA256_Update(&context, base, bytes.count)
    }
    public func finalize() -> Digest {
        var finishing = context
        var bytes = [UInt8](repeating: 0, count: Int(SHA256_DIGEST_LENGTH))
        SHA256_Final(&bytes, &finishing)
        return Digest(sha256: bytes)
    }
}
