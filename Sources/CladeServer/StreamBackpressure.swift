import NIOCore

extension AsyncThrowingStream.Continuation where Element == ByteBuffer, Failure == Error {
    /// Yields `buffer`, waiting while the stream's buffer is full, so a producer runs no faster
    /// than the HTTP client reads; throws `CancellationError` once the reader is gone.
    func yieldWaiting(_ buffer: ByteBuffer) async throws {
        while true {
            switch yield(buffer) {
            case .enqueued: return
            case .terminated: throw CancellationError()
            case .dropped: try await Task.sleep(nanoseconds: 2_000_000)
            @unknown default: return
            }
        }
    }
}
