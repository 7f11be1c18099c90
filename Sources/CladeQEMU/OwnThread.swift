import Foundation

/// Runs `work`, which blocks (a socket exchange with QEMU or its network helper, a control
/// group's writes), on a thread of its own, so the calling task does not hold one of the
/// concurrency pool's few threads while it waits: forks launched together would stall each other.
func onOwnThread<R: Sendable>(_ work: @escaping @Sendable () throws -> R) async throws -> R {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
    }
}
