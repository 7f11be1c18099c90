import CladeGuest
import CladeGuestProtocol
import CladeModel
import CladeStore
import CladeVMM
import Foundation

/// Options for a cold boot.
public struct BootOptions: Sendable {
    public var image: String
    /// For `run`: environment merged over the image's, and the user to run as.
    public var env: [String: String]?
    public var user: String?
    public var memoryMiB: Int
    public var cpus: Int
    /// Seconds to wait for the guest agent.
    public var readyTimeout: Double
    /// An end time for the sandbox (see `Lifetimes`); nil: it lives until killed.
    public var lifetime: Lifetime?
    /// What the guest may reach; nil: ``NetworkPolicy/standard`` (anything but the host).
    public var network: NetworkPolicy?
    /// Host CPU, memory and process limits beyond the defaults (see ``SandboxLimits``).
    public var limits: LimitRequest?
    /// A network the caller made for this guest (a pod's), instead of user-mode networking.
    public var attachment: GuestNetworkAttachment?

    public init(image: String = "default", memoryMiB: Int = 256, cpus: Int = 1, readyTimeout: Double = 90) {
        self.image = image
        self.memoryMiB = memoryMiB
        self.cpus = cpus
        self.readyTimeout = readyTimeout
    }

    func validate() throws {
        try lifetime?.validate()
        guard MachineSpec.memoryRange.contains(memoryMiB) else {
            throw EngineError.badInput("--memory must be between \(MachineSpec.memoryRange.lowerBound) and \(MachineSpec.memoryRange.upperBound) MiB (got \(memoryMiB))")
        }
        guard MachineSpec.cpuRange.contains(cpus) else {
            throw EngineError.badInput("--cpus must be between \(MachineSpec.cpuRange.lowerBound) and \(MachineSpec.cpuRange.upperBound) (got \(cpus))")
        }
        guard readyTimeout > 0 else { throw EngineError.badInput("the boot timeout must be positive") }
    }
}

/// Sandboxes: cold boot, exec, listing, pause and teardown.
public struct Sandboxes: EngineCapability {
    let engine: Engine

    /// Cold-boots a sandbox from an image and returns once its agent answers.
    /// On failure nothing of the sandbox remains: no process, directory or socket. The sandbox
    /// is journaled under `operation` when given (a bake or run that goes on using it), else
    /// under a `boot` entry of its own, so a clade killed half-way leaves no VM behind.
    public func boot(
        _ options: BootOptions, partOf operation: OperationJournal.Entry? = nil, progress: @Sendable (String) -> Void = { _ in }
    ) async throws -> SandboxRecord {
        try options.validate()
        let isolation = try engine.requireIsolation(for: options.network ?? .standard)
        try engine.requireFreeSpace()
        let image = try engine.images.named(options.image, progress: progress)
        let files = try engine.images.bootFiles(of: image)
        let choice = try await accelerator()
        try home.prepare()
        let id = Names.newSandboxID()
        let paths = sandboxCatalog.paths(id)
        let setup = try FileLock(home: home, .sandboxSetup(id))
        defer { setup.unlock() }
        let ownEntry = operation == nil ? try beginOperation(.boot, subject: id, paths: [paths.directory]) : nil
        defer { ownEntry.map(journal.end) }
        if let operation { try journal.add(paths.directory, to: operation) }
        try FileManager.default.createDirectory(at: paths.directory, withIntermediateDirectories: false)
        var record = SandboxRecord(
            id: id, image: image.name, state: .booting, pid: nil, agentPort: 0, mac: MachineSpec.randomMAC(),
            memoryMiB: options.memoryMiB, cpus: options.cpus, accelerator: choice.accelerator.rawValue)
        record.kernel = image.kernel
        record.initrd = image.initrd
        record.rootfs = image.rootfs
        record.imageConfig = image.config
        do {
            progress("creating the disk overlay")
            // Relative backing path: sandbox and snapshot directories are both two levels below
            // the home, so the same overlay (later a snapshot's disk layer) resolves anywhere.
            try disks.createOverlay(at: paths.disk, backingName: Engine.rootfsBackingName(image.rootfs), backingFormat: .raw)
            try sandboxCatalog.put(record)
            progress("starting the VM (\(choice.accelerator.rawValue))")
            // init_on_free zeroes pages the guest frees (the unpacked initramfs, exited processes),
            // so snapshot memory holds fewer stale bytes: smaller packs, better compression.
            var commandLine = "console=ttyS0 quiet panic=-1 init_on_free=1 clade.hostname=\(id)"
            if choice.accelerator == .tcg, let khz = HostInfo.tscKHz() { commandLine += " tsc_early_khz=\(khz)" }
            record.kernelCommandLine = commandLine
            let confinement = try confine(&record, policy: isolation.policy, limits: options.limits, checked: isolation)
            try sandboxCatalog.put(record)
            let mac = record.mac
            let launched = try await launchWithAgentPort(options.attachment?.agentPort) { port in
                var spec = machineSpec(
                    memoryMiB: options.memoryMiB, cpus: options.cpus, accelerator: choice.accelerator, kernel: files.kernel,
                    initrd: files.initrd, commandLine: commandLine, paths: paths, port: port, mac: mac)
                spec.confinement = confinement
                spec.guestNetworkDescriptor = options.attachment?.tapDescriptor
                return spec
            }
            record.pid = launched.machine.pid
            record.agentPort = launched.port
            try sandboxCatalog.put(record)
            progress("waiting for the guest agent")
            let machine = launched.machine
            let pid = machine.pid
            _ = try await AgentClient(port: record.agentPort, sandbox: record.id).waitUntilReady(timeout: options.readyTimeout) {
                if !machine.isAlive {
                    throw EngineError.bootFailed(id: id, reason: "the VM exited during boot", consoleTail: machine.consoleTail(lines: 12))
                }
            }
            record.state = .running
            // The lifetime counts from when the sandbox can be used, not from the start of its boot.
            options.lifetime?.apply(to: &record)
            try sandboxCatalog.put(record)
            logger.info("sandbox running", metadata: ["id": "\(id)", "port": "\(record.agentPort)", "pid": "\(pid)"])
            return record
        } catch {
            let tail = consoleTail(id)
            await destroy(id: id, pid: record.pid)
            if error is EngineError { throw error }
            if case GuestError.agent(let message) = error {
                throw EngineError.bootFailed(id: id, reason: message, consoleTail: tail)
            }
            throw error
        }
    }

    /// Runs a command in a running sandbox, with the image's environment, working directory and
    /// user unless `env` (merged over the image's), `cwd` or `user` say otherwise.
    public func exec(
        id: String, argv: [String], env: [String: String]? = nil, cwd: String? = nil, user: String? = nil, stdin: String? = nil,
        timeout: Double? = nil
    ) async throws -> AgentResponse {
        await continueIfInterrupted(id)
        let record = try runningRecord(id)
        guard !argv.isEmpty else { throw EngineError.badInput("give the command to run after --") }
        if let timeout, !(timeout > 0) { throw EngineError.badInput("--timeout must be a positive number of seconds") }
        let resolved = ExecDefaults(record.imageConfig).apply(env: env, cwd: cwd, user: user)
        do {
            return try await AgentClient(port: record.agentPort, sandbox: record.id).exec(argv, env: resolved.env, cwd: resolved.cwd, user: resolved.user, stdin: stdin, timeout: timeout)
        } catch {
            throw await explainingDeath(of: id, error)
        }
    }

    /// `error`, or, when sandbox `id` died meanwhile (its VM stopped under the command), an error
    /// that says so and why, instead of the agent's closed connection. It only looks: cleaning
    /// up stays with whoever lists or stops the sandbox (the containerd shim tears its own down).
    func explainingDeath(of id: String, _ error: Error) async -> Error {
        guard let record = try? sandboxCatalog.get(id), record.state == .running || record.state == .paused else { return error }
        let lost = lazyServerLost(sandbox: id, record: record)
        guard lost != nil || !isAlive(id, pid: record.pid) else { return error }
        let cause = lost ?? lazyMemoryFailure(sandbox: id, record: record) ?? "its VM exited"
        return EngineError.guestFailed("sandbox \(id) stopped while the command ran: \(cause)")
    }

    /// Continues sandbox `id` if an operation that died left it paused or its processes held,
    /// so a command sent to it runs instead of waiting on a frozen guest.
    public func continueIfInterrupted(_ id: String) async {
        guard (try? Names.validateSandboxID(id)) != nil, let record = (try? sandboxCatalog.get(id)) ?? nil else { return }
        await engine.recovery.continueIfAbandoned(id: id, machine: machine(id, pid: record.pid), paths: sandboxCatalog.paths(id))
    }

    /// Stops a sandbox and removes everything it had: process, sockets, pid file, disk overlay, memory file.
    public func kill(id: String) async throws {
        try Names.validateSandboxID(id)
        let paths = sandboxCatalog.paths(id)
        guard try FileSystem.exists(paths.directory) else {
            throw ModelError.notFound(kind: "sandbox", name: id, hint: "list sandboxes with `clade ls`")
        }
        let record = try? sandboxCatalog.get(id)
        await destroy(id: id, pid: record?.pid ?? machine(id, pid: nil).pid)
    }

    /// All sandboxes. Ones whose VM died without clade are reported `dead` once and their files
    /// removed. Operations interrupted by a dead clade process are rolled back first, and the
    /// catalog's sandbox rows are brought in line with what was found.
    public func list() async throws -> [SandboxRecord] {
        try await engine.recovery.recoverInterruptedOperations()
        var result: [SandboxRecord] = []
        for id in try sandboxCatalog.ids() {
            let paths = sandboxCatalog.paths(id)
            let record = try? sandboxCatalog.get(id)
            let pid = record?.pid ?? recordedPid(id)
            let alive = isAlive(id, pid: pid)
            if var record {
                if record.state == .standby {
                    // A standby whose clade died before stopping the (paused, fully captured) VM;
                    // not one being resumed, whose new process runs before the record says so.
                    if let pid, alive, !setupInProgress(id) { await machine(id, pid: pid).stop() }
                    result.append(record)
                    continue
                }
                if record.state == .running || record.state == .paused, alive, !setupInProgress(id), let lost = lazyServerLost(sandbox: id, record: record) {
                    // Its memory can no longer be read: a guest touching a page not yet in would
                    // wait for ever, so it is stopped, and says why.
                    record.state = .dead
                    record.deathCause = lost
                    logger.warning("sandbox's lazy memory server is gone; stopping it", metadata: ["id": "\(id)", "cause": "\(lost)"])
                    await destroy(id: id, pid: pid)
                    result.append(record)
                    continue
                }
                if record.state == .running, alive, let pid {
                    await engine.recovery.continueIfAbandoned(id: id, machine: machine(id, pid: pid), paths: paths)
                }
                let bootAge = Date().timeIntervalSince(record.createdAt)
                if record.state == .booting, bootAge < Engine.bootAbandonedAfter {
                    result.append(record)  // another clade process is still booting it
                    continue
                }
                if !alive || record.state == .booting {
                    // Dead, or a boot whose clade process died before finishing it, unless a
                    // live clade process is still setting it up.
                    if setupInProgress(id) {
                        result.append(record)
                        continue
                    }
                    record.state = .dead
                    if record.confinement?.controlGroups != nil, engine.controlGroups.wasOutOfMemory(sandbox: id) {
                        record.deathCause = "the kernel killed its VM for passing its host memory limit of \(record.limits?.memoryMiB ?? 0) MiB"
                    } else if let failure = lazyMemoryFailure(sandbox: id, record: record) {
                        record.deathCause = failure
                    } else if let panic = consoleTail(id, lines: 40).split(whereSeparator: \.isNewline).last(where: { $0.contains("Kernel panic") }) {
                        // `panic=-1` turns a guest panic into a reboot, which `-no-reboot` turns into QEMU's exit.
                        let reason = panic.range(of: "not syncing: ").map { String(panic[$0.upperBound...]) } ?? String(panic)
                        record.deathCause = "the guest kernel panicked: \(reason.trimmingCharacters(in: .whitespacesAndNewlines))"
                    }
                    logger.warning("sandbox's VM is gone; cleaning up", metadata: ["id": "\(id)", "cause": "\(record.deathCause ?? "unknown")"])
                    await destroy(id: id, pid: pid)
                }
                result.append(record)
            } else if !alive, !setupInProgress(id) {
                await destroy(id: id, pid: nil)  // a crash before the record was written
            }
        }
        try syncSandboxRows(with: result)
        return result
    }

    /// Makes the catalog's sandbox rows match a fresh scan of the directories.
    func syncSandboxRows(with scanned: [SandboxRecord]) throws {
        let current = Dictionary(scanned.filter { $0.state != .dead }.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        let indexed = try sandboxCatalog.indexed()
        for row in indexed where current[row.id] == nil {
            // Gone since the scan began, or being set up by another process (its put will follow).
            if !setupInProgress(row.id), !((try? FileSystem.exists(sandboxCatalog.paths(row.id).directory)) ?? true) {
                try sandboxCatalog.forget(row.id)
            }
        }
        // Rows are only added here, never updated: a writer updates file then row, and a row
        // written from this (possibly older) scan must not replace a newer one.
        let indexedIDs = Set(indexed.map(\.id))
        for record in current.values where !indexedIDs.contains(record.id) {
            try sandboxCatalog.indexIfMissing(record)
        }
    }

    /// One sandbox, from the catalog, with its process checked (a dead one is reported `dead`
    /// and cleaned up, as in ``list()``), without scanning the others.
    public func get(id: String) async throws -> SandboxRecord {
        guard var record = try sandboxCatalog.indexed(id) ?? sandboxCatalog.get(id) else {
            throw ModelError.notFound(kind: "sandbox", name: id, hint: "list sandboxes with `clade ls`")
        }
        guard record.state == .running || record.state == .paused else { return record }
        let lost = lazyServerLost(sandbox: id, record: record)
        if isAlive(id, pid: record.pid), lost == nil { return record }
        if setupInProgress(id) { return record }
        record.state = .dead
        record.deathCause = lost ?? lazyMemoryFailure(sandbox: id, record: record)
        logger.warning("sandbox's VM is gone; cleaning up", metadata: ["id": "\(id)", "cause": "\(record.deathCause ?? "unknown")"])
        await destroy(id: id, pid: record.pid)
        return record
    }

    /// Cold-boots, runs one command, and tears the VM down whatever happens.
    /// With no `argv`, runs the image's `Entrypoint` + `Cmd`.
    public func run(
        _ options: BootOptions, argv requested: [String], timeout: Double?, progress: @Sendable (String) -> Void = { _ in }
    ) async throws -> AgentResponse {
        var argv = requested
        if argv.isEmpty { argv = try engine.images.named(options.image, progress: progress).config?.defaultCommand ?? [] }
        guard !argv.isEmpty else {
            throw EngineError.badInput("image '\(options.image)' has no Entrypoint or Cmd; give the command to run after --")
        }
        if let timeout, !(timeout > 0) { throw EngineError.badInput("--timeout must be a positive number of seconds") }
        // If this process dies while the command runs, the next clade stops the VM.
        let entry = try beginOperation(.run, subject: options.image)
        defer { journal.end(entry) }
        let record = try await boot(options, partOf: entry, progress: progress)
        do {
            progress("running \(argv.joined(separator: " "))")
            let resolved = ExecDefaults(record.imageConfig).apply(env: options.env, cwd: nil, user: options.user)
            let response = try await AgentClient(port: record.agentPort, sandbox: record.id).exec(
                argv, env: resolved.env, cwd: resolved.cwd, user: resolved.user, timeout: timeout)
            try await kill(id: record.id)
            return response
        } catch {
            try? await kill(id: record.id)
            throw error
        }
    }

    /// Stops a running sandbox's vCPUs; it keeps its process, memory and endpoint.
    public func pause(id: String) async throws {
        let lock = try FileLock(home: home, .sandbox(id))
        defer { lock.unlock() }
        var record = try runningRecord(id)
        try backend.require(.pause)
        try await machine(id, pid: record.pid).pause()
        record.state = .paused
        try sandboxCatalog.put(record)
    }

    /// Continues a paused sandbox.
    public func unpause(id: String) async throws {
        let lock = try FileLock(home: home, .sandbox(id))
        defer { lock.unlock() }
        var record = try sandboxCatalog.require(id)
        guard record.state == .paused else {
            throw EngineError.wrongState("sandbox \(id) is \(record.state.rawValue), not paused; only a paused sandbox can be unpaused")
        }
        try await machine(id, pid: record.pid).resume()
        record.state = .running
        try sandboxCatalog.put(record)
    }
}
