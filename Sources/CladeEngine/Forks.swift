#if canImport(Glibc)
import Glibc
#endif
import CladeGuest
import CladeGuestProtocol
import CladeModel
import CladePack
import CladeStore
import CladeVMM
import Foundation

/// The outcome for one child of a fork: a running sandbox or the reason it failed.
public struct ForkOutcome: Sendable {
    public var record: SandboxRecord?
    public var error: String?
    /// Milliseconds from the start of this child's setup to its agent confirming the new identity.
    public var milliseconds: Double
    /// How the memory file reached the child's directory.
    public var memoryMethod: MaterializeMethod?
}

/// Forks: start children of a snapshot, each with its own identity, memory shared until written.
public struct Forks: EngineCapability {
    let engine: Engine

    /// Most children one fork request may start.
    public static let maxForkCount = Engine.maxForkCount

    /// Checks, before any VM starts, that everything a restore of `metadata` needs is present and intact.
    func preflight(_ metadata: SnapshotMetadata) throws {
        let directory = snapshotCatalog.directory(metadata.tag)
        func damaged(_ what: String) -> EngineError {
            .damaged("snapshot '\(metadata.tag)' is damaged: \(what); remove it with `clade rmi \(metadata.tag)` and bake it again")
        }
        var memory = directory.appendingPathComponent(metadata.memory.file)
        try ensureLazyRootfsServed(metadata.rootfs)
        if let plan = try lazyMemoryPlan(metadata) {
            try ensureLazyMemoryServed(metadata, plan: plan)
            memory = LazyFilePaths(home: home, snapshotID: plan.snapshotID).servedFile
        }
        guard let memoryStatus = try FileSystem.status(of: memory) else { throw damaged("its memory file \(memory.path) is missing") }
        let expected = Int64(metadata.machine.memoryMiB) << 20
        guard memoryStatus.size == expected else {
            throw damaged("its memory file is \(memoryStatus.size) bytes, expected \(expected) (truncated or replaced)")
        }
        let state = directory.appendingPathComponent(metadata.deviceState.file)
        guard try FileSystem.exists(state) else { throw damaged("its device state \(state.path) is missing") }
        let actual = try Digest.ofFile(at: state)
        guard actual.digest == metadata.deviceState.sha256, actual.size == metadata.deviceState.size else {
            throw damaged("its device state does not match the recorded SHA-256 and size")
        }
        for layer in metadata.diskLayers where try !FileSystem.exists(directory.appendingPathComponent(layer.file)) {
            throw damaged("its disk layer \(layer.file) is missing")
        }
        for (digest, what) in [(metadata.kernel, "kernel"), (metadata.initrd, "initrd"), (metadata.rootfs, "root filesystem")]
        where try !blobs.contains(digest) {
            throw damaged("its \(what) blob \(digest.short) is missing from the store")
        }
        guard metadata.hypervisor.name == backend.name else {
            throw EngineError.unsupported("snapshot '\(metadata.tag)' was taken with \(metadata.hypervisor.name), not \(backend.name)")
        }
        try backend.require(metadata.deviceState.format == SnapshotMetadata.DeviceState.devicesFormat ? .devicesOnlyState : .stateWithSharedMemory)
    }

    /// How the HTTP APIs place their sandboxes' memory: in the RAM tier where that lets them
    /// branch live (root, tmpfs, userfaultfd for a confined QEMU), else the store's own file.
    public var serviceMemoryOrder: [MaterializeMethod] {
        guard geteuid() == 0 else { return Materializer.fanoutOrder }
        let tierRoot = engine.memoryTier.directory.deletingLastPathComponent()
        return backend.liveMemoryCopyBlocker(memoryFile: tierRoot, unprivilegedProcess: true) == nil ? [.ramTier] : Materializer.fanoutOrder
    }

    /// Starts `count` sandboxes from snapshot `tag` in parallel. Children that fail are cleaned
    /// up and reported; the others keep running.
    /// With `lifetime`, every child gets that end time (see `Lifetimes`).
    public func fork(
        tag: String, count: Int, memoryOrder: [MaterializeMethod] = Materializer.fanoutOrder, lifetime: Lifetime? = nil,
        network: NetworkPolicy? = nil, limits: LimitRequest? = nil, attachment: GuestNetworkAttachment? = nil
    ) async throws -> [ForkOutcome] {
        let ramTier = memoryOrder.first == .ramTier
        if ramTier, geteuid() != 0 {
            throw EngineError.unsupported(
                "the RAM placement (--memory-placement ram) needs clade running as root for now: an unprivileged QEMU sees only its own directory, and the tier's copy lives outside it")
        }
        guard (1...Self.maxForkCount).contains(count) else {
            throw EngineError.badInput("-n must be between 1 and \(Self.maxForkCount) (got \(count))")
        }
        if attachment != nil, count != 1 {
            throw EngineError.badInput("a network attachment carries one guest; fork one child with it (got -n \(count))")
        }
        try lifetime?.validate()
        let metadata = try snapshotCatalog.require(tag)
        _ = try limits?.resolve(guestMemoryMiB: metadata.machine.memoryMiB)
        let isolation = try engine.requireIsolation(for: network ?? metadata.network ?? .standard)
        if geteuid() != 0, !isolation.plan.namespaces {
            // QEMU 7.2 opens a memory file read-write even to map it private; a snapshot's is
            // sealed 0444, which only a user namespace's root (or the host's) may open that way.
            throw EngineError.unsupported(
                "an unprivileged fork needs clade's user namespace, which this host does not give it (see `clade doctor`): QEMU 7.2 opens the snapshot's sealed memory file read-write, which only root may do; boot works, or run clade as root")
        }
        try engine.requireFreeSpace()
        try preflight(metadata)
        if metadata.machine.accelerator == Accelerator.kvm.rawValue, try await accelerator().accelerator != .kvm {
            throw EngineError.unsupported("snapshot '\(tag)' was taken under KVM, which does not work on this host (see `clade doctor`)")
        }
        // The journal lists every child before any exists: if this process dies half-way, the
        // children it started are stopped and removed by the next clade that looks.
        let ids = (0..<count).map { _ in Names.newSandboxID() }
        let entry = try beginOperation(.fork, subject: tag, paths: ids.map { sandboxCatalog.paths($0).directory })
        defer { journal.end(entry) }
        let outcomes = await withTaskGroup(of: ForkOutcome.self) { group in
            for id in ids {
                group.addTask {
                    let start = Date()
                    do {
                        let (record, method) = try await self.startChild(
                            of: metadata, id: id, port: attachment?.agentPort, mac: nil, memoryOrder: memoryOrder, lifetime: lifetime, network: network, limits: limits,
                            isolation: isolation, attachment: attachment)
                        return ForkOutcome(record: record, error: nil, milliseconds: Date().timeIntervalSince(start) * 1000, memoryMethod: method)
                    } catch {
                        return ForkOutcome(record: nil, error: "\(error)", milliseconds: Date().timeIntervalSince(start) * 1000, memoryMethod: nil)
                    }
                }
            }
            var outcomes: [ForkOutcome] = []
            for await outcome in group { outcomes.append(outcome) }
            return outcomes
        }
        FaultPoint.forkChildrenStarted.crashIfRequested()
        return outcomes
    }

    /// Restores one child of a snapshot into `sandboxes/<id>`: memory hardlinked (else reflink,
    /// sparse copy), the disk layer hardlinked as `base.qcow2` under a private qcow2 overlay, RAM
    /// mapped `share=off`, then a fresh identity pushed to the agent.
    package func startChild(
        of metadata: SnapshotMetadata, id: String, port: Int?, mac: String?, memoryOrder: [MaterializeMethod] = Materializer.fanoutOrder,
        lifetime: Lifetime? = nil, network: NetworkPolicy? = nil, keepingOptOutOf previous: SandboxConfinement? = nil, limits: LimitRequest? = nil,
        isolation: Engine.IsolationCheck? = nil, attachment: GuestNetworkAttachment? = nil
    ) async throws -> (SandboxRecord, MaterializeMethod) {
        let directory = snapshotCatalog.directory(metadata.tag)
        let paths = sandboxCatalog.paths(id)
        let setup = try FileLock(home: home, .sandboxSetup(id))
        defer { setup.unlock() }
        try FileManager.default.createDirectory(at: paths.directory, withIntermediateDirectories: false)
        var record = SandboxRecord(
            id: id, image: metadata.image ?? "", state: .booting, pid: nil, agentPort: 0, mac: mac ?? MachineSpec.randomMAC(),
            memoryMiB: metadata.machine.memoryMiB, cpus: metadata.machine.vcpus, accelerator: metadata.machine.accelerator,
            snapshot: metadata.tag, generation: UUID().uuidString.lowercased())
        record.snapshotID = metadata.id
        record.kernel = metadata.kernel
        record.initrd = metadata.initrd
        record.rootfs = metadata.rootfs
        record.kernelCommandLine = metadata.machine.kernelCommandLine
        record.imageConfig = metadata.imageConfig
        // A sandbox restarted as a fork of its own new snapshot keeps an opt-out it was started with.
        if let optOut = previous?.weakerIsolation {
            record.confinement = SandboxConfinement(seccomp: true, hostFirewall: false, weakerIsolation: optOut)
        }
        let started = Date()
        var phases: [String] = []
        func mark(_ phase: String) { phases.append("\(phase)=\(Int(Date().timeIntervalSince(started) * 1000))ms") }
        do {
            let materializer = Materializer(logger: logger)
            let method: MaterializeMethod
            let snapshotMemory = directory.appendingPathComponent(metadata.memory.file)
            if let plan = try lazyMemoryPlan(metadata) {
                // Not the RAM tier: copying the file there would fetch all of it first.
                try ensureLazyMemoryServed(metadata, plan: plan)
                let served = LazyFilePaths(home: home, snapshotID: plan.snapshotID).servedFile
                guard symlink(served.path, paths.memory.path) == 0 else { throw StoreError.systemCall("symlink", path: paths.memory.path, errno: errno) }
                method = .lazyFetch
            } else if memoryOrder.first == .ramTier {
                let placed = try engine.memoryTier.place(snapshotMemory, snapshotID: metadata.id)
                guard symlink(placed.path, paths.memory.path) == 0 else { throw StoreError.systemCall("symlink", path: paths.memory.path, errno: errno) }
                method = .ramTier
            } else {
                method = try materializer.materialize(snapshotMemory, at: paths.memory, order: memoryOrder)
            }
            try materializer.materialize(directory.appendingPathComponent(metadata.deviceState.file), at: paths.deviceState)
            guard !metadata.diskLayers.isEmpty else { throw EngineError.damaged("snapshot '\(metadata.tag)' has no disk layer") }
            // Every layer of the chain gets a name in the child's directory, so the chain resolves
            // there (relative backing names) and survives `rmi --force` of the snapshot.
            for (index, layer) in metadata.diskLayers.enumerated() {
                try materializer.materialize(directory.appendingPathComponent(layer.file), at: paths.layer(index))
            }
            try disks.createOverlay(at: paths.disk, backingName: SandboxPaths.layerName(metadata.diskLayers.count - 1), backingFormat: .layer)
            record.layerCount = metadata.diskLayers.count
            record.activeDisk = paths.disk.lastPathComponent
            mark("files")
            // A fork keeps its snapshot's policy unless the request names another.
            let confinement = try confine(&record, policy: network ?? metadata.network ?? .standard, limits: limits, checked: isolation)
            try sandboxCatalog.put(record)
            let mac = record.mac
            let stateKind: SavedStateKind = metadata.deviceState.format == SnapshotMetadata.DeviceState.devicesFormat ? .devicesOnly : .memoryInSharedFile
            let handle = try await launchWithAgentPort(port) { agentPort in
                var spec = machineSpec(
                    memoryMiB: metadata.machine.memoryMiB, cpus: metadata.machine.vcpus,
                    accelerator: Accelerator(rawValue: metadata.machine.accelerator) ?? .tcg,
                    kernel: blobs.url(for: metadata.kernel), initrd: blobs.url(for: metadata.initrd),
                    commandLine: metadata.machine.kernelCommandLine, paths: paths, port: agentPort, mac: mac)
                spec.restoring = true
                spec.restoredStateKind = stateKind
                spec.confinement = confinement
                spec.guestNetworkDescriptor = attachment?.tapDescriptor
                guard backend.deviceLayout(for: spec) == metadata.machine.devices else {
                    throw EngineError.unsupported("snapshot '\(metadata.tag)' was taken with devices \(metadata.machine.devices), which this clade does not build; use the clade version that made it")
                }
                return spec
            }
            record.pid = handle.machine.pid
            record.agentPort = handle.port
            mark("launched")
            try sandboxCatalog.put(record)
            try await handle.machine.restoreState(from: paths.deviceState, kind: stateKind)
            mark("restored")
            try await pushIdentity(record)
            mark("identity")
            record.state = .running
            // The lifetime counts from when the child can be used.
            lifetime?.apply(to: &record)
            try sandboxCatalog.put(record)
            logger.debug("child started", metadata: ["id": "\(id)", "phases": "\(phases.joined(separator: " "))"])
            return (record, method)
        } catch {
            let tail = consoleTail(id)
            let lazyFailure = engine.sandboxes.lazyMemoryFailure(sandbox: id)
            await destroy(id: id, pid: record.pid)
            if let lazyFailure { throw EngineError.bootFailed(id: id, reason: lazyFailure, consoleTail: tail) }
            if tail.isEmpty { throw error }
            throw EngineError.bootFailed(id: id, reason: "\(error)", consoleTail: tail)
        }
    }

    /// Siblings restored from one snapshot share RNG state, clock, hostname and MAC; give each its own.
    func pushIdentity(_ record: SandboxRecord) async throws {
        // SystemRandomNumberGenerator draws from the kernel's CSPRNG (getrandom).
        var generator = SystemRandomNumberGenerator()
        let entropy = (0..<64).map { _ in UInt8.random(in: 0...255, using: &generator) }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let request = AgentRequest(
            action: .identity, hostname: record.id, entropy: Data(entropy).base64EncodedString(),
            timeNanoseconds: Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec), generation: record.generation, mac: record.mac)
        let client = AgentClient(port: record.agentPort, sandbox: record.id)
        let deadline = Date().addingTimeInterval(30)
        var lastError: Error?
        while Date() < deadline {
            do {
                let response = try await client.send(request, timeout: 10)
                if let error = response.error { throw GuestError.agent("the agent refused the new identity: \(error)") }
                if let warnings = response.warnings { logger.warning("identity partly applied", metadata: ["id": "\(record.id)", "warnings": "\(warnings)"]) }
                return
            } catch let error as GuestError {
                throw error
            } catch {
                lastError = error
                // A VM that died (a lazy memory chunk it faulted on failed, say) never answers.
                if !isAlive(record.id, pid: record.pid) {
                    throw GuestError.agent("the restored guest's VM exited before its agent answered (last error: \(error))")
                }
                try await Task.sleep(nanoseconds: 20_000_000)
            }
        }
        throw GuestError.agent("the restored guest's agent did not answer within 30 s (last error: \(lastError.map { "\($0)" } ?? "none"))")
    }
}
