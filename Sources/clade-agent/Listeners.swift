#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxShims
import CladeGuestProtocol

/// Reads newline-terminated lines from a file descriptor.
struct LineReader {
    let fd: Int32
    private var pending: [UInt8] = []
    private var buffer = [UInt8](repeating: 0, count: 65536)
    /// Set when reading stopped on an error or an over-long line rather than at end of file.
    private(set) var failed = false

    init(fd: Int32) { self.fd = fd }

    /// The next line without its newline, or nil at end of file or on error.
    mutating func nextLine() -> [UInt8]? {
        while true {
            if let newline = pending.firstIndex(of: 0x0A) {
                let line = Array(pending[..<newline])
                pending.removeSubrange(...newline)
                return line
            }
            if pending.count > AgentCodec.maxLineBytes {
                failed = true
                return nil
            }
            let count = read(fd, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            if count < 0 { failed = true }
            if count <= 0 { return nil }
            pending.append(contentsOf: buffer[0..<count])
        }
    }
}

/// Writes all of `bytes`, retrying short writes. Returns false when the peer is gone.
@discardableResult
func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let count = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { return false }
        offset += count
    }
    return true
}

func encodeResponse(_ response: AgentResponse) -> [UInt8] {
    (try? AgentCodec.encodeLine(response)) ?? Array("{\"error\":\"cannot encode response\"}\n".utf8)
}

/// Serves requests over TCP (forkd-compatible): one connection may carry several
/// requests, answered in order. A listener that stops listening (a root process in the guest
/// can shut it down through `pidfd_getfd`) is replaced as soon as the port is free again.
func serveTCP(port: UInt16, handler: RequestHandler) {
    var failures = 0
    while true {
        guard let listener = listenTCP(port: port, quietly: failures > 0) else {
            failures += 1
            usleep(200_000)
            continue
        }
        if failures > 0 { log("listening on TCP port \(port) again") }
        failures = 0
        acceptConnections(on: listener, handler: handler)
        close(listener)
        log("the listener on TCP port \(port) stopped working; opening a new one")
    }
}

private func listenTCP(port: UInt16, quietly: Bool) -> Int32? {
    let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard listener >= 0 else {
        log("cannot create the TCP socket: \(String(cString: strerror(errno)))")
        return nil
    }
    var one: Int32 = 1
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr = in_addr(s_addr: INADDR_ANY)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0, listen(listener, 64) == 0 else {
        if !quietly { log("cannot listen on TCP port \(port): \(String(cString: strerror(errno)))") }
        close(listener)
        return nil
    }
    if !quietly { log("listening on TCP port \(port)") }
    return listener
}

/// Accepts until the listener fails for good (it was shut down or closed under us).
private func acceptConnections(on listener: Int32, handler: RequestHandler) {
    while true {
        let connection = clade_accept_cloexec(listener)
        if connection < 0 {
            let error = errno
            if error == EINVAL || error == EBADF || error == ENOTSOCK { return }
            if error != EINTR { usleep(10_000) }
            continue
        }
        enableKeepalive(connection)
        startThread {
            let peer = Connection(fd: connection)
            var reader = LineReader(fd: connection)
            while let line = reader.nextLine() {
                if line.isEmpty { continue }
                if let response = handler.handle(line: line, on: peer), !peer.send(response) { break }
            }
            peer.close()
        }
    }
}

/// Serves requests on the virtio-serial port named `name`. Requests run concurrently
/// and answers carry the request's `id`, so the host can multiplex one channel.
///
/// The port stays open from one host connection to the next. Closing it at each end of file
/// (while no host is connected, every read is one) opened a race: the guest's driver discards
/// what arrives while the port is closed, and QEMU learns of the close only later, so a host
/// that connected in that instant lost its first requests and waited for answers forever.
func serveSerial(name: String, handler: RequestHandler) {
    guard let device = findSerialPort(named: name) else {
        return log("no virtio-serial port named \(name); serving TCP only")
    }
    while true {
        let fd = open(device, O_RDWR | O_CLOEXEC)
        if fd < 0 {
            log("cannot open \(device): \(String(cString: strerror(errno)))")
            sleep(1)
            continue
        }
        // Without a host, a read returns end of file at once: look again a little later. What
        // the host sends meanwhile waits in the open port.
        while serveSerialSession(fd: fd, handler: handler) { usleep(50_000) }
        close(fd)
        sleep(1)
    }
}

/// One host connection on the open port `fd`, until the host leaves (true) or the port fails
/// (false: reopen it). Whatever the connection's requests started hears that it closed; a late
/// answer to it is dropped rather than sent to the next host.
///
/// End of file alone does not prove the host left. The driver learns of a new host on its control
/// queue, after the host's first bytes may already have been read: until then a read returns end
/// of file although a host is there, and ending the session would drop the answers to what it
/// sent. So a session that has carried requests ends only when reads keep finding no host for
/// ``hostGoneAfterQuietReads`` tries in a row.
private func serveSerialSession(fd: Int32, handler: RequestHandler) -> Bool {
    let peer = Connection(fd: fd, ownsDescriptor: false)
    var reader = LineReader(fd: fd)
    var carriedRequests = false
    var quietReads = 0
    while true {
        guard let line = reader.nextLine() else {
            if reader.failed || !carriedRequests || quietReads >= hostGoneAfterQuietReads { break }
            quietReads += 1
            usleep(20_000)
            continue
        }
        quietReads = 0
        if line.isEmpty { continue }
        carriedRequests = true
        startThread {
            if let response = handler.handle(line: line, on: peer) { peer.send(response) }
        }
    }
    peer.close()
    return !reader.failed
}

/// Consecutive end-of-file reads, 20 ms apart, after which a host that sent requests is taken to
/// have left: a second, far longer than the guest's driver needs to hear of a host that came.
private let hostGoneAfterQuietReads = 50

/// Probes an idle connection now and then, so that one whose host end vanished (a fork restored
/// from a snapshot taken while it was open has no such connection on the host) is noticed and
/// its thread and subscriptions are released.
private func enableKeepalive(_ fd: Int32) {
    var on: Int32 = 1, idle: Int32 = 30, interval: Int32 = 10, count: Int32 = 3
    let size = socklen_t(MemoryLayout<Int32>.size)
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, size)
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &idle, size)
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, &interval, size)
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPCNT, &count, size)
    // Each line is written whole; do not hold its tail back waiting for an ACK (Nagle).
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, size)
}

private func findSerialPort(named name: String) -> String? {
    guard let directory = opendir("/sys/class/virtio-ports") else { return nil }
    defer { closedir(directory) }
    while let entry = readdir(directory) {
        let port = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        if port.hasPrefix(".") { continue }
        let portName = readSmallFile("/sys/class/virtio-ports/\(port)/name")
        if trimmed(portName) == name { return "/dev/\(port)" }
    }
    return nil
}
