#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Runs `body` on a new detached OS thread. The agent uses plain threads rather than
/// Swift concurrency so that blocking syscalls (accept, read, poll) never starve a pool.
func startThread(_ body: @escaping @Sendable () -> Void) {
    final class Box: @unchecked Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    var attributes = pthread_attr_t()
    pthread_attr_init(&attributes)
    pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
    let result = pthread_create(&thread, &attributes, { raw in
        guard let raw else { return nil }
        let box = Unmanaged<Box>.fromOpaque(raw).takeRetainedValue()
        box.body()
        return nil
    }, box)
    pthread_attr_destroy(&attributes)
    if result != 0 {
        Unmanaged<Box>.fromOpaque(box).release()
        log("cannot start a thread: error \(result)")
    }
}

/// A mutex-protected value with a condition variable for waiters.
final class Guarded<Value>: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var value: Value

    init(_ value: Value) {
        self.value = value
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
    }

    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        pthread_mutex_lock(&mutex)
        defer {
            pthread_cond_broadcast(&condition)
            pthread_mutex_unlock(&mutex)
        }
        return try body(&value)
    }

    /// Blocks until `body` returns non-nil, re-checking after every change.
    func wait<R>(until body: (inout Value) -> R?) -> R {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while true {
            if let result = body(&value) { return result }
            pthread_cond_wait(&condition, &mutex)
        }
    }

    /// `wait(until:)` that gives up, returning nil, once `seconds` have passed.
    func wait<R>(until body: (inout Value) -> R?, atMost seconds: Double) -> R? {
        var limit = timespec()
        clock_gettime(CLOCK_REALTIME, &limit)
        let whole = seconds.rounded(.down)
        limit.tv_sec += Int(whole)
        limit.tv_nsec += Int((seconds - whole) * 1e9)
        if limit.tv_nsec >= 1_000_000_000 {
            limit.tv_sec += 1
            limit.tv_nsec -= 1_000_000_000
        }
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while true {
            if let result = body(&value) { return result }
            if pthread_cond_timedwait(&condition, &mutex, &limit) == ETIMEDOUT { return body(&value) }
        }
    }
}

/// Writes a line to the agent's standard error (the guest console when running as PID 1).
func log(_ message: String) {
    let line = "clade-agent: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}
