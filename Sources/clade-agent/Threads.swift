#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Runs `body` on a detached OS thread: an idle one left by an earlier body when there is one,
/// else a new one. The agent uses plain threads rather than Swift concurrency so that blocking
/// syscalls (accept, read, poll) never starve a pool.
///
/// Reusing threads matters under emulation: every connection and every command's stream has a
/// thread, and a thread's creation and exit (clone, its stack's pages faulted in and released,
/// the exit path) are guest kernel code that a restored guest's emulator translates afresh in
/// each fork. Idle threads parked before a snapshot take a fork's first requests instead.
func startThread(_ body: @escaping @Sendable () -> Void) {
    guard !ThreadCache.handOff(body) else { return }
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
        ThreadCache.run(first: box.body)
        return nil
    }, box)
    pthread_attr_destroy(&attributes)
    if result != 0 {
        Unmanaged<Box>.fromOpaque(box).release()
        log("cannot start a thread: error \(result)")
    }
}

/// Threads that finished their body and wait for another (see ``startThread(_:)``).
enum ThreadCache {
    private struct State {
        var idle = 0
        var work: [@Sendable () -> Void] = []
    }

    /// Idle threads kept at most; a thread finishing while this many wait exits instead.
    static let maxIdle = 4
    private static let state = Guarded(State())

    /// Gives `body` to an idle thread; false when none is free to take it.
    static func handOff(_ body: @escaping @Sendable () -> Void) -> Bool {
        state.withLock { state in
            guard state.idle > state.work.count else { return false }
            state.work.append(body)
            return true
        }
    }

    /// A thread's life: `first`, then whatever is handed to it while it waits idle.
    static func run(first: @escaping @Sendable () -> Void) {
        var body = first
        while true {
            body()
            let parked = state.withLock { state -> Bool in
                guard state.idle < maxIdle else { return false }
                state.idle += 1
                return true
            }
            guard parked else { return }
            body = state.wait { state -> (@Sendable () -> Void)? in
                guard !state.work.isEmpty else { return nil }
                state.idle -= 1
                return state.work.removeFirst()
            }
        }
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
