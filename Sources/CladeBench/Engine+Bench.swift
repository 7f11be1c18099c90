import CladeEngine
import CladeGuest
import CladeModel
import CladeQEMU
import CladeStore
import CladeVMM
import Foundation

/// One measured approach in `clade bench fork`.
public struct BenchFigure: Codable, Sendable {
    public var name: String
    /// Wall-clock milliseconds until all N were ready.
    public var totalMilliseconds: Double
    /// Mean milliseconds per child (each child's own start-to-ready time).
    public var perChildMilliseconds: Double
    public var succeeded: Int
    /// Memory-file bytes written per child.
    public var memoryBytesCopiedPerChild: Int64?

    enum CodingKeys: String, CodingKey {
        case name, succeeded
        case totalMilliseconds = "total_ms"
        case perChildMilliseconds = "per_child_ms"
        case memoryBytesCopiedPerChild = "memory_bytes_copied_per_child"
    }
}

/// The result of `clade bench fork`: every figure measured in one run on one snapshot.
public struct ForkBenchReport: Codable, Sendable {
    public var count: Int
    public var memoryMiB: Int
    public var accelerator: String
    public var figures: [BenchFigure]
    /// Private (copied-on-write) guest RAM of each idle clade fork, from smaps of the RAM mapping.
    public var idlePrivateGuestRAMBytes: [Int64]
    /// Named ratios, e.g. `cold_boot/fork`.
    public var ratios: [String: Double]
    /// Under TCG, the blocks of guest code QEMU had translated in each clade fork once it was
    /// ready: what the restored guest ran for the first time, the bulk of a fork's CPU under
    /// emulation. Unlike times, it barely moves between runs or machines, so a change that makes
    /// forks run more guest code shows at once. Nil under KVM, which translates nothing.
    public var translatedBlocksPerFork: [Int]?

    enum CodingKeys: String, CodingKey {
        case count, accelerator, figures, ratios
        case memoryMiB = "memory_mib"
        case idlePrivateGuestRAMBytes = "idle_private_guest_ram_bytes"
        case translatedBlocksPerFork = "translated_blocks_per_fork"
    }
}

extension Engine {
    /// Measures, in one run: (a) cold boot of N VMs to agent-ready, (b) clade fork of N,
    /// (c) fork where each child gets a full copy of the memory file, (e) a bare `qemu -S`
    /// start as the floor; plus the private guest RAM of idle forks.
    public func benchFork(count: Int, memoryMiB: Int = 256, progress: @Sendable (String) -> Void = { _ in }) async throws -> ForkBenchReport {
        // The baselines (d) and (e) are QEMU's own techniques.
        guard backend is QEMUDriver else { throw VMMError.unsupported(backend: backend.name, operation: "run the fork benchmark's QEMU baselines") }
        guard (1...Self.maxForkCount).contains(count) else {
            throw EngineError.badInput("-n must be between 1 and \(Self.maxForkCount) (got \(count))")
        }
        let tag = "bench-\(Names.newSandboxID())"
        progress("baking snapshot \(tag)")
        let metadata = try await snapshots.bake(BakeOptions(boot: BootOptions(memoryMiB: memoryMiB), tag: tag))
        do {
            let report = try await runForkBench(metadata, count: count, memoryMiB: memoryMiB, progress: progress)
            _ = try? await snapshots.remove(tag, cascade: true)
            return report
        } catch {
            _ = try? await snapshots.remove(tag, cascade: true)
            throw error
        }
    }

    private func runForkBench(
        _ metadata: SnapshotMetadata, count: Int, memoryMiB: Int, progress: @Sendable (String) -> Void
    ) async throws -> ForkBenchReport {
        var figures: [BenchFigure] = []

        progress("(a) cold boot of \(count) to agent-ready")
        figures.append(try await measure("cold_boot", count: count) { _ in
            let record = try await self.sandboxes.boot(BootOptions(memoryMiB: memoryMiB))
            return (record.id, nil)
        })

        progress("(b) clade fork of \(count) (hardlinked memory)")
        var idle: [Int64] = []
        var translated: [Int] = []
        let forkFigure = try await measure("clade_fork", count: count, keep: true) { _ in
            let (record, method) = try await self.forks.startChild(of: metadata, id: Names.newSandboxID(), port: nil, mac: nil)
            return (record.id, method == .hardlink ? 0 : metadata.memory.physicalSize)
        } inspect: { ids in
            for id in ids { if let blocks = await self.translatedBlocks(of: id) { translated.append(blocks) } }
            try? await Task.sleep(nanoseconds: 2_000_000_000)
            idle = ids.compactMap { self.privateGuestRAM(of: $0) }
        }
        figures.append(forkFigure)

        progress("(c) fork with a full copy of the memory file per child")
        figures.append(try await measure("fork_full_copy", count: count) { _ in
            let (record, _) = try await self.forks.startChild(of: metadata, id: Names.newSandboxID(), port: nil, mac: nil, memoryOrder: [.copy])
            return (record.id, metadata.memory.logicalSize)
        })

        progress("(d) qcow2 internal snapshot: savevm once, a copy of the qcow2 per child, -loadvm")
        figures.append(try await measureInternalSnapshot(count: count, memoryMiB: memoryMiB))

        progress("(e) bare qemu -S process start")
        figures.append(try await measure("qemu_floor", count: count) { _ in
            try await self.startBareQEMU(metadata)
        })

        func total(_ name: String) -> Double { figures.first { $0.name == name }?.totalMilliseconds ?? .nan }
        func perChild(_ name: String) -> Double { figures.first { $0.name == name }?.perChildMilliseconds ?? .nan }
        let ratios: [String: Double] = [
            "cold_boot/clade_fork": total("cold_boot") / total("clade_fork"),
            "fork_full_copy/clade_fork": total("fork_full_copy") / total("clade_fork"),
            "qcow2_loadvm/clade_fork": total("qcow2_loadvm") / total("clade_fork"),
            "clade_fork_per_child/qemu_floor_per_child": perChild("clade_fork") / perChild("qemu_floor"),
            "idle_private_ram/guest_ram": idle.isEmpty ? .nan : Double(idle.max() ?? 0) / Double(Int64(memoryMiB) << 20),
        ]
        return ForkBenchReport(
            count: count, memoryMiB: memoryMiB, accelerator: metadata.machine.accelerator, figures: figures,
            idlePrivateGuestRAMBytes: idle, ratios: ratios, translatedBlocksPerFork: translated.isEmpty ? nil : translated.sorted())
    }

    /// Runs `start` N times in parallel, timing each and the whole, then kills what started.
    private func measure(
        _ name: String, count: Int, keep: Bool = false,
        _ start: @escaping @Sendable (Int) async throws -> (String, Int64?),
        inspect: ([String]) async -> Void = { _ in }
    ) async throws -> BenchFigure {
        let begin = Date()
        let results = await withTaskGroup(of: (String, Int64?, Double)?.self) { group in
            for index in 0..<count {
                group.addTask {
                    let childStart = Date()
                    guard let (id, copied) = try? await start(index) else { return nil }
                    return (id, copied, Date().timeIntervalSince(childStart) * 1000)
                }
            }
            var collected: [(String, Int64?, Double)] = []
            for await result in group { if let result { collected.append(result) } }
            return collected
        }
        let total = Date().timeIntervalSince(begin) * 1000
        await inspect(results.map(\.0))
        for (id, _, _) in results { try? await sandboxes.kill(id: id) }
        let perChild = results.isEmpty ? .nan : results.map(\.2).reduce(0, +) / Double(results.count)
        return BenchFigure(
            name: name, totalMilliseconds: total, perChildMilliseconds: perChild, succeeded: results.count,
            memoryBytesCopiedPerChild: results.first?.1)
    }

    /// The technique clade replaces: `savevm` writes RAM and device state into the source's qcow2;
    /// each child gets a copy of that qcow2 and starts with `-loadvm`.
    private func measureInternalSnapshot(count: Int, memoryMiB: Int) async throws -> BenchFigure {
        let source = try await sandboxes.boot(BootOptions(memoryMiB: memoryMiB))
        let sourcePaths = sandboxCatalog.paths(source.id)
        let snapshotName = "clade-bench"
        let qemu = QEMUDriver(logger: logger)
        do {
            let sourceMachine = qemu.machine(runtimeDirectory: sourcePaths.directory, pid: source.pid)
            let output = try await sourceMachine.withQMP { client in
                try await client.execute("human-monitor-command", arguments: ["command-line": .string("savevm \(snapshotName)")], timeout: 300)
            }
            if let text = output.stringValue, !text.isEmpty { throw VMMError.stateTransferFailed(backend: qemu.name, reason: "savevm: \(text)") }
            await sourceMachine.stop()
            guard let kernel = source.kernel, let initrd = source.initrd, let commandLine = source.kernelCommandLine else {
                throw EngineError.unsupported("the benchmark source did not record its boot files")
            }
            let figure = try await measure("qcow2_loadvm", count: count) { _ in
                let id = Names.newSandboxID()
                let paths = self.sandboxCatalog.paths(id)
                try FileManager.default.createDirectory(at: paths.directory, withIntermediateDirectories: false)
                try Materializer.copy(from: sourcePaths.disk, to: paths.disk, mode: 0o644, sparse: true)
                var record = SandboxRecord(
                    id: id, image: source.image, state: .booting, pid: nil, agentPort: try PortAllocator.freeLoopbackPort(),
                    mac: MachineSpec.randomMAC(), memoryMiB: memoryMiB, cpus: source.cpus, accelerator: source.accelerator)
                let spec = self.machineSpec(
                    memoryMiB: memoryMiB, cpus: source.cpus, accelerator: Accelerator(rawValue: source.accelerator) ?? .tcg,
                    kernel: self.blobs.url(for: kernel), initrd: self.blobs.url(for: initrd), commandLine: commandLine,
                    paths: paths, port: record.agentPort, mac: record.mac)
                try self.sandboxCatalog.put(record)
                record.pid = try await qemu.launch(spec, extraArguments: ["-loadvm", snapshotName]).pid
                try self.sandboxCatalog.put(record)
                _ = try await AgentClient(port: record.agentPort, sandbox: record.id).waitUntilReady(timeout: 120) {}
                let copied = try FileSystem.status(of: paths.disk)?.allocatedBytes
                return (id, copied)
            }
            await destroy(id: source.id, pid: nil)
            return figure
        } catch {
            await destroy(id: source.id, pid: source.pid)
            throw error
        }
    }

    /// Starts QEMU paused, waiting for incoming state, with the same command line a fork uses:
    /// the cost of the process itself, with no guest code run.
    private func startBareQEMU(_ metadata: SnapshotMetadata) async throws -> (String, Int64?) {
        let id = Names.newSandboxID()
        let paths = sandboxCatalog.paths(id)
        try FileManager.default.createDirectory(at: paths.directory, withIntermediateDirectories: false)
        try Materializer(logger: logger).materialize(snapshotCatalog.directory(metadata.tag).appendingPathComponent(metadata.memory.file), at: paths.memory)
        try QEMUImage().createBlank(at: paths.disk, megabytes: 64)
        var record = SandboxRecord(
            id: id, image: "", state: .booting, pid: nil, agentPort: try PortAllocator.freeLoopbackPort(), mac: MachineSpec.randomMAC(),
            memoryMiB: metadata.machine.memoryMiB, cpus: metadata.machine.vcpus, accelerator: metadata.machine.accelerator)
        var spec = machineSpec(
            memoryMiB: metadata.machine.memoryMiB, cpus: metadata.machine.vcpus, accelerator: Accelerator(rawValue: metadata.machine.accelerator) ?? .tcg,
            kernel: blobs.url(for: metadata.kernel), initrd: blobs.url(for: metadata.initrd), commandLine: metadata.machine.kernelCommandLine,
            paths: paths, port: record.agentPort, mac: record.mac)
        spec.restoring = true
        record.pid = try await QEMUDriver(logger: logger).launch(spec).pid
        try sandboxCatalog.put(record)
        return (id, 0)
    }

    /// The `TB count` of QEMU's `info jit` for sandbox `id`, or nil (not TCG, or no answer).
    func translatedBlocks(of id: String) async -> Int? {
        guard let record = try? sandboxCatalog.get(id), let pid = record.pid else { return nil }
        let machine = QEMUDriver(logger: logger).machine(runtimeDirectory: sandboxCatalog.paths(id).directory, pid: pid)
        let answer: JSONValue
        do {
            answer = try await machine.withQMP { client in
                try await client.execute("human-monitor-command", arguments: ["command-line": .string("info jit")])
            }
        } catch {
            logger.debug("cannot read the translation count", metadata: ["id": "\(id)", "error": "\(error)"])
            return nil
        }
        guard let text = answer.stringValue else { return nil }
        // The monitor ends its lines with "\r\n".
        let line = text.split(whereSeparator: \.isNewline).first { $0.hasPrefix("TB count") }
        return line.flatMap { $0.split(whereSeparator: \.isWhitespace).last }.flatMap { Int($0) }
    }

    /// Private bytes of the guest-RAM mapping (pages the guest wrote since the restore), from smaps.
    func privateGuestRAM(of id: String) -> Int64? {
        guard let record = try? sandboxCatalog.get(id), let pid = record.pid,
              let data = try? FileSystem.readProcFile("/proc/\(pid)/smaps") else { return nil }
        let smaps = String(decoding: data, as: UTF8.self)
        let memoryPath = sandboxCatalog.paths(id).memory.path
        var inMapping = false
        var total: Int64 = 0
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let first = fields.first, first.contains("-"), first.first?.isHexDigit == true {
                inMapping = line.hasSuffix(memoryPath)
            } else if inMapping, fields.count >= 2, fields[0] == "Anonymous:" {
                // Copy-on-write pages of the share=off mapping: what this child wrote. (Private_Dirty
                // would also count the snapshot file's not-yet-written-back page cache.)
                total += (Int64(fields[1]) ?? 0) * 1024
            }
        }
        return total
    }
}
