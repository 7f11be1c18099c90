#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Foundation

/// The FIFOs containerd names for a process's stdio. Each is opened read-write, which never
/// blocks on a FIFO whatever the other side is doing: containerd may open its ends before or
/// after the process starts. Output ends reach EOF at containerd once ``close()`` runs.
final class ProcessIO: @unchecked Sendable {
    private let lock = NSLock()
    private var stdout: CInt = -1
    private var stderr: CInt = -1
    private var stdinSource: DispatchSourceRead?

    init(stdout stdoutPath: String, stderr stderrPath: String) throws {
        stdout = try Self.open(stdoutPath)
        do {
            stderr = try Self.open(stderrPath)
        } catch {
            if stdout >= 0 { Glibc.close(stdout) }
            throw error
        }
    }

    private static func open(_ path: String) throws -> CInt {
        guard !path.isEmpty else { return -1 }
        let descriptor = Glibc.open(path, O_RDWR | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw TTRPCError.status(.invalidArgument, "cannot open the stdio FIFO \(path): \(String(cString: strerror(errno)))")
        }
        return descriptor
    }

    func writeStdout(_ data: Data) { write(data, to: lock.withLock { stdout }) }
    func writeStderr(_ data: Data) { write(data, to: lock.withLock { stderr }) }

    private func write(_ data: Data, to descriptor: CInt) {
        guard descriptor >= 0 else { return }
        data.withUnsafeBytes { raw in
            guard var base = raw.baseAddress else { return }
            var left = raw.count
            while left > 0 {
                let written = Glibc.write(descriptor, base, left)
                if written < 0 {
                    if errno == EINTR { continue }
                    return
                }
                left -= written
                base += written
            }
        }
    }

    /// Forwards what arrives on the stdin FIFO to `forward`, in order, until ``closeStdin()``;
    /// then what was still in the FIFO, then `end`.
    func pumpStdin(path: String, forward: @escaping @Sendable (Data) async -> Void, end: @escaping @Sendable () async -> Void) throws {
        guard !path.isEmpty else { return }
        let descriptor = Glibc.open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw TTRPCError.status(.invalidArgument, "cannot open the stdin FIFO \(path): \(String(cString: strerror(errno)))")
        }
        let (chunks, continuation) = AsyncStream.makeStream(of: Data.self)
        let source = DispatchSource.makeReadSource(fileDescriptor: descriptor, queue: DispatchQueue(label: "clade.shim.stdin"))
        @Sendable func drain() {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = Glibc.read(descriptor, &buffer, buffer.count)
                guard count > 0 else { return }
                continuation.yield(Data(buffer[0..<count]))
            }
        }
        source.setEventHandler { drain() }
        source.setCancelHandler {
            // containerd copies the last bytes into the FIFO before it asks for the close.
            drain()
            continuation.finish()
            Glibc.close(descriptor)
        }
        lock.withLock { stdinSource = source }
        source.resume()
        Task {
            for await chunk in chunks { await forward(chunk) }
            await end()
        }
    }

    /// Stops reading stdin (containerd's CloseIO, or the process's end).
    func closeStdin() {
        lock.withLock {
            defer { stdinSource = nil }
            return stdinSource
        }?.cancel()
    }

    /// Closes every end: containerd's readers see EOF.
    func close() {
        closeStdin()
        let (out, err) = lock.withLock {
            defer { stdout = -1; stderr = -1 }
            return (stdout, stderr)
        }
        if out >= 0 { Glibc.close(out) }
        if err >= 0 { Glibc.close(err) }
    }
}
