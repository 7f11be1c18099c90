#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import Foundation
import NIOCore
import NIOPosix

/// Who is on either side of a connection the egress proxy took: the sandbox that opened it
/// (by the uid of its VMM's socket) and where it may go.
enum EgressPeers {
    /// The uid owning the local TCP socket bound to `address:port` (IPv4), from the kernel's
    /// socket tables: a redirected connection keeps its source, so the VMM's own socket is the
    /// one whose local end is the proxy's peer.
    static func owner(ofIPv4 address: String, port: Int, tables: [String] = ["/proc/net/tcp", "/proc/net/tcp6"]) -> UInt32? {
        var value = in_addr()
        guard inet_pton(AF_INET, address, &value) == 1 else { return nil }
        // The tables print the address as the kernel holds it (network order read natively).
        let hex = String(format: "%08X", value.s_addr), portHex = String(format: "%04X", port)
        let wanted = ["\(hex):\(portHex)", "0000000000000000FFFF0000\(hex):\(portHex)"]
        for table in tables {
            // A socket table is longer than one read of it returns (String(contentsOfFile:) stops at ~4 KiB).
            guard let data = try? FileSystem.readProcFile(table) else { continue }
            let text = String(decoding: data, as: UTF8.self)
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count > 7, wanted.contains(String(fields[1])) else { continue }
                return UInt32(fields[7])
            }
        }
        return nil
    }

    /// Addresses the proxy never connects to, whatever a policy or a name says: the host itself
    /// (loopback, any address of its interfaces), link-local (cloud metadata services),
    /// unspecified, multicast and broadcast. The proxy runs as clade, outside the uid the packet
    /// filter holds off the host, so it checks this itself.
    static func isForbidden(_ address: SocketAddress, hostAddresses: Set<String>) -> Bool {
        guard let ip = address.ipAddress else { return true }
        if hostAddresses.contains(ip) { return true }
        switch address {
        case .v4(let v4):
            return isForbiddenIPv4(UInt32(bigEndian: v4.address.sin_addr.s_addr))
        case .v6(let v6):
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff {
                return isForbiddenIPv4(bytes[12..<16].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
            }
            let unspecifiedOrLoopback = bytes[0..<15].allSatisfy { $0 == 0 } && bytes[15] <= 1
            return unspecifiedOrLoopback || bytes[0] == 0xff || (bytes[0] == 0xfe && bytes[1] & 0xc0 == 0x80)
        default:
            return true
        }
    }

    private static func isForbiddenIPv4(_ value: UInt32) -> Bool {
        let first = value >> 24
        return first == 0 || first == 127 || value >> 16 == 0xa9fe || first >= 224
    }

    /// Every address of the host's interfaces, as text.
    static func hostAddresses() -> Set<String> {
        var result: Set<String> = []
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return result }
        defer { freeifaddrs(list) }
        var cursor = list
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let raw = entry.pointee.ifa_addr, [sa_family_t(AF_INET), sa_family_t(AF_INET6)].contains(raw.pointee.sa_family) else { continue }
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            let length = raw.pointee.sa_family == sa_family_t(AF_INET) ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size
            guard getnameinfo(raw, socklen_t(length), &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 else { continue }
            // A scoped link-local address prints with its zone, which a peer's address lacks.
            let printed = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            result.insert(printed.split(separator: "%").first.map(String.init) ?? "")
        }
        return result
    }

    /// The addresses `name` resolves to on the host (IPv4 first), or to the operator's pinned
    /// address for it (`clade serve --egress-resolve NAME=ADDRESS`), on `port`.
    static func resolve(_ name: String, port: Int, pinned: [String: String]) async throws -> [SocketAddress] {
        if let address = pinned[name] { return [try SocketAddress(ipAddress: address, port: port)] }
        return try await NIOThreadPool.singleton.runIfActive {
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var list: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(name, String(port), &hints, &list)
            guard status == 0 else { throw EgressRefusal("\(name) does not resolve on the host: \(String(cString: gai_strerror(status)))") }
            defer { freeaddrinfo(list) }
            var addresses: [SocketAddress] = []
            var cursor = list
            while let entry = cursor {
                defer { cursor = entry.pointee.ai_next }
                guard let raw = entry.pointee.ai_addr else { continue }
                if entry.pointee.ai_family == AF_INET {
                    addresses.append(raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { SocketAddress($0.pointee, host: name) })
                } else if entry.pointee.ai_family == AF_INET6 {
                    addresses.append(raw.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { SocketAddress($0.pointee, host: name) })
                }
            }
            return addresses.filter { $0.protocol == .inet } + addresses.filter { $0.protocol == .inet6 }
        }
    }
}

/// Why the proxy closed a connection without relaying it (logged, never sent to the guest).
struct EgressRefusal: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
