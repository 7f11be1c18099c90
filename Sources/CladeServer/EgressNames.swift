import Foundation

/// Reads the host name a guest's outbound connection is for from its first bytes: the server
/// name of a TLS ClientHello (port 443), or the `Host` of an HTTP request (port 80). Neither is
/// decrypted or changed; the bytes go on to the destination as they came.
enum EgressNames {
    /// What the bytes read so far tell.
    enum Reading: Equatable {
        /// Not enough yet: read more.
        case incomplete
        /// The name the connection is for, lowercased, without a port.
        case name(String)
        /// A complete first message without a name, or not the protocol of the port.
        case unnamed(String)
    }

    /// The most that is read before a name must have been seen.
    static let maxBytes = 16 * 1024 + 5

    static func read(_ bytes: [UInt8], port: Int) -> Reading {
        port == 443 ? serverName(bytes) : httpHost(bytes)
    }

    /// The `server_name` extension of a TLS ClientHello held in the first record. A hello split
    /// across records (larger than 16 KiB) is refused rather than reassembled.
    static func serverName(_ bytes: [UInt8]) -> Reading {
        guard bytes.count >= 5 else { return .incomplete }
        guard bytes[0] == 0x16, bytes[1] == 0x03 else { return .unnamed("not a TLS handshake") }
        let recordLength = Int(bytes[3]) << 8 | Int(bytes[4])
        guard bytes.count >= 5 + recordLength else { return bytes.count >= maxBytes ? .unnamed("the TLS record is too long") : .incomplete }
        var reader = ByteReader(bytes[5..<(5 + recordLength)])
        guard reader.u8() == 0x01, let helloLength = reader.u24(), helloLength <= reader.remaining else {
            return .unnamed("the first TLS record does not hold a whole ClientHello")
        }
        guard reader.skip(2 + 32), let session = reader.u8(), reader.skip(Int(session)),
            let suites = reader.u16(), reader.skip(suites), let compression = reader.u8(), reader.skip(Int(compression))
        else { return .unnamed("a malformed ClientHello") }
        guard let extensionsLength = reader.u16(), var extensions = reader.sub(extensionsLength) else { return .unnamed("a ClientHello without a server name") }
        while extensions.remaining >= 4 {
            guard let type = extensions.u16(), let length = extensions.u16(), var body = extensions.sub(length) else { break }
            guard type == 0 else { continue }
            guard let listLength = body.u16(), var list = body.sub(listLength) else { break }
            while list.remaining >= 3 {
                guard let kind = list.u8(), let nameLength = list.u16(), let name = list.bytes(nameLength) else { break }
                if kind == 0 { return hostName(String(decoding: name, as: UTF8.self)) }
            }
        }
        return .unnamed("a ClientHello without a server name")
    }

    /// The `Host` header of the request head (through its blank line).
    static func httpHost(_ bytes: [UInt8]) -> Reading {
        guard let end = bytes.firstRange(of: Array("\r\n\r\n".utf8)) else {
            return bytes.count >= maxBytes ? .unnamed("the HTTP request head is larger than 16 KiB") : .incomplete
        }
        let head = String(decoding: bytes[..<end.lowerBound], as: UTF8.self)
        guard head.split(separator: "\r\n").first?.split(separator: " ").count == 3 else { return .unnamed("not an HTTP request") }
        for line in head.split(separator: "\r\n").dropFirst() {
            guard let colon = line.firstIndex(of: ":"), line[..<colon].lowercased() == "host" else { continue }
            var value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            // A port is the destination's business, and a bracketed IPv6 literal is no name.
            if let portColon = value.lastIndex(of: ":"), !value.hasPrefix("[") { value = String(value[..<portColon]) }
            return hostName(value)
        }
        return .unnamed("an HTTP request without a Host")
    }

    private static func hostName(_ text: String) -> Reading {
        var name = text.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789.-_")
        guard !name.isEmpty, name.count <= 253, name.allSatisfy(allowed.contains) else { return .unnamed("'\(text.prefix(80))' is not a host name") }
        return .name(name)
    }
}

/// Big-endian reads over a slice, each nil (and reading nothing) when too few bytes are left.
private struct ByteReader {
    var rest: ArraySlice<UInt8>

    init(_ bytes: ArraySlice<UInt8>) { rest = bytes }

    var remaining: Int { rest.count }

    mutating func u8() -> UInt8? { rest.popFirst() }
    mutating func u16() -> Int? { number(2) }
    mutating func u24() -> Int? { number(3) }

    mutating func skip(_ count: Int) -> Bool { self.bytes(count) != nil }

    mutating func bytes(_ count: Int) -> ArraySlice<UInt8>? {
        guard count >= 0, count <= rest.count else { return nil }
        defer { rest = rest.dropFirst(count) }
        return rest.prefix(count)
    }

    mutating func sub(_ count: Int) -> ByteReader? { bytes(count).map(ByteReader.init) }

    private mutating func number(_ width: Int) -> Int? { bytes(width)?.reduce(0) { $0 << 8 | Int($1) } }
}
