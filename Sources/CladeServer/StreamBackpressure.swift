import Foundation
import NIOCore

/// A response body fed by a producer that runs no faster than the HTTP client reads: while the
/// buffer between them is full, the producer sleeps until the reader takes a buffer (it is woken
/// by that read, not by polling). When the reader is gone, `write` throws `CancellationError`.
struct BackpressuredStream: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    private let base: AsyncThrowingStream<ByteBuffer, Error>
    private let reads: ReadCounter

    /// The producer's end.
    struct Writer: Sendable {
        fileprivate let continuation: AsyncThrowingStream<ByteBuffer, Error>.Continuation
        fileprivate let reads: ReadCounter

        /// Queues `buffer`, waiting while the buffer is full.
        func write(_ buffer: ByteBuffer) async throws {
            while true {
                let seen = reads.count
                switch continuation.yield(buffer) {
                case .enqueued: return
                case .terminated: throw CancellationError()
                case .dropped:
                    await reads.wait(forMoreThan: seen)
                    try Task.checkCancellation()
                @unknown default: return
                }
            }
        }

        func finish(throwing error: Error? = nil) { continuation.finish(throwing: error) }
    }

    /// A stream holding at most `buffered` buffers; `onTermination` runs once the reader is gone
    /// or the writer finished.
    static func make(buffered: Int, onTermination: @escaping @Sendable () -> Void) -> (stream: BackpressuredStream, writer: Writer) {
        let (base, continuation) = AsyncThrowingStream<ByteBuffer, Error>.makeStream(bufferingPolicy: .bufferingOldest(buffered))
        let reads = ReadCounter()
        continuation.onTermination = { _ in
            reads.end()
            onTermination()
        }
        return (BackpressuredStream(base: base, reads: reads), Writer(continuation: continuation, reads: reads))
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        fileprivate var base: AsyncThrowingStream<ByteBuffer, Error>.AsyncIterator
        fileprivate let reads: ReadCounter

        mutating func next() async throws -> ByteBuffer? {
            let element = try await base.next()
            reads.increment()
            return element
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: base.makeAsyncIterator(), reads: reads) }
}

/// How many buffers the reader has taken, and the writers waiting for the next one.
private final class ReadCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var taken: UInt64 = 0
    private var ended = false
    private var waiters: [UUID: CheckedContinuation<Void, Never>] = [:]

    var count: UInt64 { lock.withLock { taken } }

    func increment() { wakeAll { $0.taken += 1 } }

    func end() { wakeAll { $0.ended = true } }

    /// Returns once the count passes `seen`, the reader is gone, or the task is cancelled.
    func wait(forMoreThan seen: UInt64) async {
        let id = UUID()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = lock.withLock { () -> Bool in
                    if taken != seen || ended || Task.isCancelled { return true }
                    waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            lock.withLock { waiters.removeValue(forKey: id) }?.resume()
        }
    }

    private func wakeAll(after change: (ReadCounter) -> Void) {
        let woken = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
            change(self)
            defer { waiters = [:] }
            return Array(waiters.values)
        }
        for waiter in woken { waiter.resume() }
    }
}

/// The task feeding a stream, cancelled when the stream's reader goes away, whether that
/// happens before or after the task is handed over.
final class ProducerTask: @unchecked Sendable {
    private let lock = NSLock()
    private var task: Task<Void, Never>?
    private var cancelled = false

    func set(_ task: Task<Void, Never>) {
        let cancelNow = lock.withLock { () -> Bool in
            self.task = task
            return cancelled
        }
        if cancelNow { task.cancel() }
    }

    func cancel() {
        let running = lock.withLock { () -> Task<Void, Never>? in
            cancelled = true
            return task
        }
        running?.cancel()
    }
}
