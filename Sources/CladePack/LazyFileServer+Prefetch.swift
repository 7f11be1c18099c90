#if canImport(Glibc)
import Glibc
#endif
import CLazyFuse
import CladeStore
import Foundation

extension LazyFileServer {
    /// Parallel fetches for the prefetch: enough to keep a distant registry's pipe full, where
    /// one chunk at a time would pay a round trip each.
    static let prefetchWorkers = 8

    /// Fetches the recorded working set in parallel, then pushes it into the kernel's page cache
    /// of the served file (FUSE notify-store), so a child's first touches neither wait on the
    /// registry nor cross into this process. The engine starts no child before this is done.
    func prefetch() {
        defer { writeStatistics() }
        guard prefetchEnabled, let offsets = plan.workingSet, !offsets.isEmpty, let session else {
            condition.withLock { statistics.prefetchDone = true }
            return
        }
        let started = Date()
        let indices = offsets.compactMap { chunkIndex[$0 / plan.chunkSize] }
        condition.withLock { statistics.prefetchChunks = indices.count }
        let cursor = ChunkCursor()
        Self.runWorkers(Self.prefetchWorkers) { [self] in
            while let position = cursor.next(below: indices.count) {
                try? obtain(indices[position], onDemand: false)
            }
        }
        // notify-store needs the kernel to know the file, which a lookup through the mount gives;
        // the descriptor keeps it known while the pages go in.
        var stored = 0
        let fd = open(paths.servedFile.path, O_RDONLY | O_CLOEXEC)
        if fd >= 0 {
            defer { close(fd) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(plan.chunkSize), alignment: 4096)
            defer { buffer.deallocate() }
            for index in indices where condition.withLock({ states[index] == .present }) {
                let chunk = plan.chunks[index]
                let count = pread(dataDescriptor, buffer.baseAddress, Int(chunk.contentSize), off_t(chunk.offset))
                guard count == Int(chunk.contentSize) else { continue }
                if clade_lazy_store(session, UInt64(chunk.offset), buffer.baseAddress, Int(count)) == 0 { stored += 1 }
            }
        } else {
            logger.warning("prefetched chunks stay out of the page cache: the served file did not open", metadata: ["error": "\(String(cString: strerror(errno)))"])
        }
        let seconds = Date().timeIntervalSince(started)
        condition.withLock {
            statistics.prefetchedChunks = stored
            statistics.prefetchSeconds = seconds
            statistics.prefetchDone = true
        }
        logger.info("prefetched the working set", metadata: ["serving": "\(subject)", "chunks": "\(indices.count)", "stored": "\(stored)", "seconds": "\(seconds)"])
    }

    /// Runs `body` on `count` threads of its own and waits for all of them: fetches block on the
    /// network, and Dispatch's concurrent loops stop at one thread per core.
    static func runWorkers(_ count: Int, _ body: @escaping @Sendable () -> Void) {
        let done = DispatchSemaphore(value: 0)
        for _ in 0..<count {
            Thread {
                body()
                done.signal()
            }.start()
        }
        for _ in 0..<count { done.wait() }
    }
}
