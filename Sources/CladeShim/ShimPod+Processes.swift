import CladeEngine
import CladeGuest
import CladeGuestProtocol
import CladeVMM
import Foundation

extension ShimPod {
    /// Starts `entry` in the guest through the agent and streams it to its FIFOs. Returns once
    /// the agent has started it; its exit arrives later through ``exited(_:status:)``.
    func launch(_ entry: ShimProcess, in sandboxID: String) async throws -> ProcessIO {
        let io = try ProcessIO(stdout: entry.stdout, stderr: entry.terminal ? "" : entry.stderr)
        let key = entry.key
        let tag = key.agentTag
        let size = entry.terminal ? TerminalSize(rows: entry.spec.consoleSize?.height ?? 24, cols: entry.spec.consoleSize?.width ?? 80) : nil
        let environment = entry.spec.environment
        var spec = ProcessSpec(
            args: entry.spec.args ?? [], env: environment.isEmpty ? nil : environment, cwd: entry.spec.cwd.flatMap { $0.isEmpty ? nil : $0 },
            user: entry.spec.agentUser, terminal: size, tag: tag, background: true, root: entry.root)
        spec.rlimits = try await resourceLimits(for: entry, in: sandboxID)
        let processes = engine.processes
        let agent = try processes.agent(for: sandboxID)
        let (started, startedContinuation) = AsyncStream.makeStream(of: Result<Void, Error>.self)
        let logger = logger
        Task {
            do {
                let exit = try await processes.run(id: sandboxID, spec) { event in
                    switch event {
                    case .started, .attached: startedContinuation.yield(.success(()))
                    case .stdout(let data): io.writeStdout(data)
                    case .stderr(let data): io.writeStderr(data)
                    case .exited: break
                    }
                }
                startedContinuation.finish()
                await self.exited(key, status: UInt32(bitPattern: exit.code))
            } catch {
                startedContinuation.yield(.failure(error))
                startedContinuation.finish()
                logger.error("a guest process's stream ended without its exit", metadata: ["process": "\(key)", "error": "\(error)"])
                await self.reportOutOfMemory(sandboxID: sandboxID, container: key.container)
                // 255: the process's fate is unknown (the VM or its agent went away).
                await self.exited(key, status: 255)
            }
        }
        var iterator = started.makeAsyncIterator()
        switch await iterator.next() {
        case .success?: break
        case .failure(let error)?:
            io.close()
            throw ShimErrors.translate(error, doing: "start \(key) in the guest")
        case nil:
            // Exited before the started event could be seen; the exit is already recorded.
            break
        }
        if !entry.stdin.isEmpty {
            try io.pumpStdin(path: entry.stdin, forward: { data in
                try? await agent.writeStdin(tag: tag, data)
            }, end: {
                try? await agent.closeStdin(tag: tag)
            })
        }
        return io
    }

    /// Tells containerd of an OOM kill when the kernel ended the VMM for passing its memory
    /// ceiling (the guest's processes then end with it).
    func reportOutOfMemory(sandboxID: String, container: String) async {
        guard engine.controlGroups.wasOutOfMemory(sandbox: sandboxID), !oomReported else { return }
        oomReported = true
        var event = Containerd_Events_TaskOOM()
        event.containerID = container
        await events.publish("/tasks/oom", event)
    }

    /// Sends `signal` to a process. A process that has ended, or a sandbox container with no
    /// guest process, is handled here: Kill of a stopped task succeeds, as the CRI expects.
    func kill(_ key: ProcessKey, signal: UInt32, all: Bool) async throws {
        // First, before anything can throw: every Kill that reaches the pod is answered, and its
        // answer (``killAnswered()``) releases the exit this one holds.
        unansweredKills.append(key)
        let entry = try process(key)
        if entry.status == .stopped { return }
        guard entry.runsInGuest, entry.status != .created, let sandboxID else {
            await exited(key, status: 128 + signal)
            return
        }
        let targets = all && key.exec.isEmpty
            ? processes.values.filter { $0.key.container == key.container && $0.status == .running && $0.runsInGuest }.map(\.key)
            : [key]
        for target in targets {
            do {
                try await engine.processes.agent(for: sandboxID).signal(tag: target.agentTag, String(signal))
            } catch {
                // Gone meanwhile: its exit is on its way.
                logger.info("signal not delivered", metadata: ["process": "\(target)", "error": "\(error)"])
            }
        }
    }

    /// Closes a process's stdin (containerd's CloseIO).
    func closeIO(_ key: ProcessKey) throws {
        try process(key).io?.closeStdin()
    }

    /// Resizes a process's terminal.
    func resize(_ key: ProcessKey, width: UInt32, height: UInt32) async throws {
        let entry = try process(key)
        guard entry.terminal, entry.status == .running, let sandboxID else { return }
        let size = TerminalSize(rows: UInt16(clamping: height), cols: UInt16(clamping: width))
        do {
            try await engine.processes.agent(for: sandboxID).resize(tag: key.agentTag, to: size)
        } catch {
            throw ShimErrors.translate(error, doing: "resize \(key)'s terminal")
        }
    }

    /// The process's `rlimits`, when the pod's agent can apply them. An agent baked before it
    /// could is told none, and the pod's log says so: a container then runs with the guest's
    /// defaults, as it did before, rather than not at all.
    func resourceLimits(for entry: ShimProcess, in sandboxID: String) async throws -> [ResourceLimit]? {
        guard let limits = entry.spec.rlimits, !limits.isEmpty else { return nil }
        guard try await podAgentFeatures(sandboxID).contains(AgentFeature.resourceLimits) else {
            logger.warning("the pod's agent predates resource limits; bake the snapshot again with this clade to apply them", metadata: ["process": "\(entry.key)", "rlimits": "\(limits.map(\.type))"])
            return nil
        }
        return limits
    }

    /// What the pod's agent announced it can do; asked once per pod (a pod's agent never changes).
    func podAgentFeatures(_ sandboxID: String) async throws -> [String] {
        if let agentFeatures { return agentFeatures }
        do {
            let features = try await engine.processes.agent(for: sandboxID).call(AgentRequest(action: .ping)).features ?? []
            agentFeatures = features
            return features
        } catch {
            throw ShimErrors.translate(error, doing: "ask the pod's agent what it can do")
        }
    }
}
