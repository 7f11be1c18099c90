import CladeEngine
import CladeModel
import CladeVMM
import Foundation

extension ShimPod {
    /// Removes a stopped (or never started) process. Deleting the container that made the VM
    /// ends the VM once no other container of the pod remains.
    func delete(_ key: ProcessKey) async throws -> ShimProcess {
        let entry = try process(key)
        guard entry.status == .stopped || entry.status == .created else {
            throw TTRPCError.status(.failedPrecondition, "\(key) is still running; kill it and wait for its exit before deleting it")
        }
        var removed = entry
        if entry.status == .created { removed.exitedAt = Date() }
        entry.io?.close()
        if key.exec.isEmpty {
            if let root = entry.root, let sandboxID { await removeImageRoot(root, sandboxID: sandboxID) }
            // A container's execs go with it.
            for other in processes.keys where other.container == key.container { processes[other] = nil }
            // The VM outlives the container that made it while others of the pod remain.
            if !processes.keys.contains(where: { $0.exec.isEmpty }) { await endMachine() }
            var event = Containerd_Events_TaskDelete()
            event.containerID = key.container
            event.pid = UInt32(vmmPid)
            event.exitStatus = removed.exitStatus
            event.exitedAt = (removed.exitedAt ?? Date()).protobufTimestamp
            await events.publish("/tasks/delete", event)
        } else {
            processes[key] = nil
        }
        return removed
    }

    /// Pauses the whole VM: every container of the pod stops at once.
    func pause(_ container: String) async throws {
        _ = try process(ProcessKey(container: container, exec: ""))
        guard let sandboxID else { throw TTRPCError.status(.failedPrecondition, "the pod has no VM") }
        do {
            try await engine.sandboxes.pause(id: sandboxID)
        } catch {
            throw ShimErrors.translate(error, doing: "pause container \(container)")
        }
        for (key, entry) in processes where entry.status == .running { processes[key]?.status = .paused }
        var event = Containerd_Events_TaskPaused()
        event.containerID = container
        await events.publish("/tasks/paused", event)
    }

    func resume(_ container: String) async throws {
        _ = try process(ProcessKey(container: container, exec: ""))
        guard let sandboxID else { throw TTRPCError.status(.failedPrecondition, "the pod has no VM") }
        do {
            try await engine.sandboxes.unpause(id: sandboxID)
        } catch {
            throw ShimErrors.translate(error, doing: "resume container \(container)")
        }
        for (key, entry) in processes where entry.status == .paused { processes[key]?.status = .running }
        var event = Containerd_Events_TaskResumed()
        event.containerID = container
        await events.publish("/tasks/resumed", event)
    }

    /// Branches the running VM into a clade snapshot (`ctr task checkpoint`). The tag is written
    /// to `clade-snapshot` in the checkpoint directory containerd gives, so it travels with the
    /// checkpoint, and a pod forks it with the `clade.dev/snapshot` annotation.
    func checkpoint(_ request: Containerd_Task_V2_CheckpointTaskRequest) async throws -> String {
        let entry = try process(ProcessKey(container: request.id, exec: ""))
        guard entry.status == .running || entry.status == .paused, let sandboxID else {
            throw TTRPCError.status(.failedPrecondition, "container \(request.id) is not running; only a running container can be checkpointed")
        }
        let stamp = Int(Date().timeIntervalSince1970 * 1000)
        let tag = "ctr-checkpoint-\(String(request.id.filter { $0.isLetter || $0.isNumber || $0 == "-" }.prefix(40)))-\(stamp)"
        // containerd pauses a task before it checkpoints it; a branch takes its own consistent
        // instant, so the VM runs for the branch and is paused again after.
        let wasPaused = entry.status == .paused
        do {
            if wasPaused { try await engine.sandboxes.unpause(id: sandboxID) }
            _ = try await engine.branches.branch(id: sandboxID, tag: tag, mode: .auto)
            if wasPaused { try await engine.sandboxes.pause(id: sandboxID) }
        } catch {
            if wasPaused { try? await engine.sandboxes.pause(id: sandboxID) }
            throw ShimErrors.translate(error, doing: "checkpoint container \(request.id) into a clade snapshot")
        }
        if !request.path.isEmpty {
            let directory = URL(fileURLWithPath: request.path)
            try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try? Data((tag + "\n").utf8).write(to: directory.appendingPathComponent("clade-snapshot"), options: .atomic)
        }
        var event = Containerd_Events_TaskCheckpointed()
        event.containerID = request.id
        event.checkpoint = tag
        await events.publish("/tasks/checkpointed", event)
        return tag
    }

    func state(_ key: ProcessKey) throws -> Containerd_Task_V2_StateResponse {
        let entry = try process(key)
        var response = Containerd_Task_V2_StateResponse()
        response.id = key.exec.isEmpty ? key.container : key.exec
        response.execID = key.exec
        response.bundle = entry.bundle
        response.pid = UInt32(vmmPid)
        response.status = entry.status.wire
        response.stdin = entry.stdin
        response.stdout = entry.stdout
        response.stderr = entry.stderr
        response.terminal = entry.terminal
        response.exitStatus = entry.exitStatus
        if let exitedAt = entry.exitedAt { response.exitedAt = exitedAt.protobufTimestamp }
        return response
    }

    /// The pids containerd reports: the VMM's, the one host process the pod is.
    func pids(_ container: String) throws -> [Containerd_V1_Types_ProcessInfo] {
        _ = try process(ProcessKey(container: container, exec: ""))
        var info = Containerd_V1_Types_ProcessInfo()
        info.pid = UInt32(vmmPid)
        return vmmPid > 0 ? [info] : []
    }

    var vmm: (sandbox: String, pid: Int32)? { sandboxID.map { ($0, vmmPid) } }

    /// Shutdown: the shim exits once no container remains (the CRI calls it per container).
    func shutdownIfIdle() {
        if processes.isEmpty, sandboxID == nil { shuttingDown = true }
    }

    /// containerd's Update: the VMM's CPU and memory ceilings. The guest's own memory size was
    /// fixed when the VM was made, so a memory limit below it is refused rather than left to
    /// kill the VM.
    func update(_ request: Containerd_Task_V2_UpdateTaskRequest) async throws {
        _ = try process(ProcessKey(container: request.id, exec: ""))
        guard let sandboxID else { throw TTRPCError.status(.failedPrecondition, "the pod has no VM") }
        let resources: RuntimeResources
        do {
            resources = try JSONDecoder().decode(RuntimeResources.self, from: request.resources.value)
        } catch {
            throw TTRPCError.status(.invalidArgument, "the update's resources are not OCI LinuxResources JSON: \(error)")
        }
        let record = try await engine.sandboxes.get(id: sandboxID)
        if let limit = resources.memory?.limit, limit > 0, limit < Int64(record.memoryMiB) << 20 {
            throw TTRPCError.status(.invalidArgument, "a memory limit of \(limit >> 20) MiB is below the pod VM's \(record.memoryMiB) MiB of guest memory; give at least that")
        }
        let cores = resources.cpuCores
        do {
            try engine.controlGroups.adjust(
                sandbox: sandboxID, memoryBytes: resources.memory?.limit.flatMap { $0 > 0 ? $0 : nil }, cpuCores: cores)
        } catch {
            throw ShimErrors.translate(error, doing: "apply container \(request.id)'s new limits")
        }
    }
}
