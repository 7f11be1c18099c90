import CladeGuest
import CladeGuestProtocol
import CladeModel
import CladeStore
import CladeVMM
import Foundation

/// Images: build from a directory, look up (the default image is built on first use), list, remove.
public struct Images: EngineCapability {
    let engine: Engine

    /// Builds an image from a directory: deterministic ext4 root, initrd with the agent, kernel blob.
    @discardableResult
    public func build(
        from directory: URL, name: String, freeMiB: Int = 256, progress: @Sendable (String) -> Void = { _ in }
    ) throws -> ImageRecord {
        let locks = try beginWriting(name, freeMiB: freeMiB)
        defer { locks.unlock() }
        progress("building root filesystem from \(directory.path)")
        let rootfs = try Ext4Builder(home: home, logger: logger).build(from: directory, freeMiB: freeMiB)
        var record = try record(named: name, rootfs: rootfs, progress: progress)
        record.source = directory.path
        try imageCatalog.put(record)
        logger.info("image ready", metadata: ["image": "\(name)", "rootfs": "\(rootfs.digest)"])
        return record
    }

    /// What every image build checks and holds first: a valid name and free-space request, a
    /// kernel and an agent to put in it, the blob store shared and the name exclusively.
    func beginWriting(_ name: String, freeMiB: Int) throws -> ImageWriteLocks {
        try Names.validate(name, kind: "image")
        guard (1...1_048_576).contains(freeMiB) else { throw EngineError.badInput("--free-space must be between 1 and 1048576 MiB") }
        try home.prepare()
        _ = try GuestKernel.locate(home: home)
        _ = try AgentBinary.locate()
        let store = try FileLock.shared(home: home, .blobStore)
        do {
            return ImageWriteLocks(store: store, image: try FileLock(home: home, .image(name)))
        } catch {
            store.unlock()
            throw error
        }
    }

    /// A record for a freshly built root filesystem: builds the initrd and stores the kernel.
    func record(named name: String, rootfs: (digest: Digest, size: Int64), progress: @Sendable (String) -> Void) throws -> ImageRecord {
        let kernel = try GuestKernel.locate(home: home)
        let agent = try AgentBinary.locate()
        progress("building initrd (agent, virtio modules)")
        let initrd = try InitrdBuilder(home: home, logger: logger).build(kernel: kernel, agent: agent)
        progress("storing kernel \(kernel.release)")
        let kernelDigest = try blobs.ingestCopy(of: kernel.image).digest
        var record = ImageRecord(
            name: name, rootfs: rootfs.digest, rootfsSize: rootfs.size, initrd: initrd, kernel: kernelDigest,
            kernelRelease: kernel.release, agentVersion: CladeVersion.current)
        record.agentDigest = try AgentDigest.of(agent, home: home)
        return record
    }

    /// `record`, with its initrd rebuilt around the host's agent when it carries another one
    /// (an image made by an older clade). Kept as is when the host's kernel is not the image's.
    func withCurrentAgent(_ record: ImageRecord, progress: @Sendable (String) -> Void) throws -> ImageRecord {
        // Without an agent or kernel on this host the boot fails later with the fix to apply.
        guard let agent = try? AgentBinary.locate(), let kernel = try? GuestKernel.locate(home: home) else { return record }
        let digest = try AgentDigest.of(agent, home: home)
        guard record.agentDigest != digest else { return record }
        guard kernel.release == record.kernelRelease else {
            logger.warning("image was built for another kernel; its agent is not refreshed", metadata: [
                "image": "\(record.name)", "image_kernel": "\(record.kernelRelease)", "host_kernel": "\(kernel.release)"])
            return record
        }
        progress("refreshing \(record.name)'s initrd with this clade's agent")
        var updated = record
        updated.initrd = try InitrdBuilder(home: home, logger: logger).build(kernel: kernel, agent: agent)
        updated.agentDigest = digest
        updated.agentVersion = CladeVersion.current
        try imageCatalog.put(updated)
        logger.info("image initrd refreshed", metadata: ["image": "\(record.name)", "initrd": "\(updated.initrd)"])
        return updated
    }

    /// The image called `name`; the built-in `default` image is built on first use.
    public func named(_ name: String, progress: @Sendable (String) -> Void = { _ in }) throws -> ImageRecord {
        if let record = try imageCatalog.get(name) { return try withCurrentAgent(record, progress: progress) }
        guard name == DefaultImage.name else { return try imageCatalog.require(name) }
        progress("building the built-in default image (first use)")
        let work = try home.makeTemporaryDirectory(prefix: "default-image")
        defer { try? FileSystem.remove(work) }
        try DefaultImage.populate(work)
        return try build(from: work, name: name, progress: progress)
    }

    public func list() throws -> [ImageRecord] { try imageCatalog.list() }

    /// Removes the image's name. Its blobs stay while anything else references them.
    public func remove(_ name: String) throws {
        try imageCatalog.remove(name)
    }

    /// The blob paths an image boots from, checked to exist before any VM starts.
    func bootFiles(of image: ImageRecord) throws -> (kernel: URL, initrd: URL, rootfs: URL) {
        func path(_ digest: Digest, _ what: String) throws -> URL {
            let url = blobs.url(for: digest)
            guard try FileSystem.exists(url) else { throw EngineError.imageDamaged(name: image.name, missing: "its \(what) (\(digest.short))") }
            return url
        }
        return (try path(image.kernel, "kernel"), try path(image.initrd, "initrd"), try path(image.rootfs, "root filesystem"))
    }
}

/// The locks an image build holds until it is done.
struct ImageWriteLocks {
    let store: FileLock
    let image: FileLock

    func unlock() {
        image.unlock()
        store.unlock()
    }
}
