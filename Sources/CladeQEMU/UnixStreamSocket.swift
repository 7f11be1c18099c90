#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import CladeVMM
import Foundation

/// Blocking `AF_UNIX` stream connections, for the helpers that speak to QEMU's monitor and to
/// slirp4netns outside of NIO (descriptor passing, one-shot API calls).
enum UnixStreamSocket {
    /// Why a connection could not be made: the `errno` of `connect` is kept so that callers can
    /// retry a socket that does not exist yet.
    struct ConnectFailure: Error {
        let errno: Int32
    }

    /// A connected descriptor (close-on-exec) to the socket at `socket`, with reads that wait at
    /// most `receiveTimeout` seconds. Throws ``ConnectFailure`` when `connect` fails, and a
    /// typed error for a path the kernel cannot take or a failed `socket`.
    static func connect(to socket: URL, receiveTimeout: Double) throws -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(socket.path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw VMMError.socketPathTooLong(socket.path) }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw StoreError.systemCall("socket", path: socket.path, errno: errno) }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            let code = errno
            close(fd)
            throw ConnectFailure(errno: code)
        }
        var wait = timeval(tv_sec: Int(receiveTimeout), tv_usec: Int((receiveTimeout - receiveTimeout.rounded(.down)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }
}
