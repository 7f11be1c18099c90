import CladeEngine
import CladeGuest
import Foundation
import Logging

/// One pod as its shim sees it: one clade sandbox (the VM, made by the first container) and the
/// containers and execs running in it as guest processes. An actor, so containerd's concurrent
/// requests see one consistent state; the slow work (booting, waiting) happens outside it.
public actor ShimPod {
    let engine: Engine
    let events: ShimEvents
    let logger: Logger
    /// The clade sandbox this pod runs in, once its first container made it.
    var sandboxID: String?
    /// The VMM's pid: what containerd is told each process's pid is, as Kata does.
    var vmmPid: Int32 = 0
    /// The container whose creation made the VM; deleting it ends the VM.
    var machineOwner: String?
    /// The bundle of that container, which holds the marker naming the VM.
    var ownerBundle: String?
    var processes: [ProcessKey: ShimProcess] = [:]
    /// Rootfs directories the shim mounted, by container, to unmount at delete.
    var mountedRootfs: [String: String] = [:]
    /// Set by an accepted Shutdown: the shim exits once that answer is written.
    public internal(set) var shuttingDown = false
    /// Whether the VMM's OOM kill was already reported (once per VM).
    var oomReported = false
    /// The pod's network namespace, when the VM is attached to it, and the agent's relay.
    var podAttachment: PodAttachment?
    /// What the pod's agent announced it can do, once asked.
    var agentFeatures: [String]?
    private var waiters: [ProcessKey: [CheckedContinuation<Void, Never>]] = [:]
    /// Kills not yet answered, in arrival order (the order their answers are written in): the
    /// exit of a process one of them targets (its event and its `Wait` answers) is held until
    /// that Kill's answer is written, since the CRI deletes the task (and drops the connection the
    /// answer would come on) as soon as it sees the exit.
    var unansweredKills: [ProcessKey] = []
    var heldExits: [(key: ProcessKey, event: Containerd_Events_TaskExit)] = []
    public init(engine: Engine, events: ShimEvents, logger: Logger) {
        self.engine = engine
        self.events = events
        self.logger = logger
    }

    func process(_ key: ProcessKey) throws -> ShimProcess {
        guard let process = processes[key] else {
            throw TTRPCError.status(.notFound, "\(key.exec.isEmpty ? "container" : "exec") \(key) does not exist in this shim")
        }
        return process
    }

    /// Creates a container; the pod's first one makes its VM.
    func create(_ request: Containerd_Task_V2_CreateTaskRequest) async throws -> UInt32 {
        let key = ProcessKey(container: request.id, exec: "")
        guard processes[key] == nil else { throw TTRPCError.status(.alreadyExists, "container \(request.id) already exists") }
        guard request.checkpoint.isEmpty else {
            throw TTRPCError.status(.unimplemented, "restoring from a containerd checkpoint is not supported; fork the clade snapshot a checkpoint made with the clade.dev/snapshot annotation")
        }
        let spec = try RuntimeSpec.load(bundle: request.bundle)
        let annotations = spec.annotations ?? [:]
        let kind = annotations[Annotations.containerType]
        let imageRoot = try Self.wantsImageRoot(spec)
        // Checked before any VM exists, so a bad spec leaves nothing to clean up.
        let runsInGuest = kind != Annotations.sandboxKind
        if runsInGuest, spec.process?.args?.isEmpty ?? true {
            throw TTRPCError.status(.invalidArgument, "container \(request.id) has no process args in its config.json")
        }
        if sandboxID == nil {
            guard kind != Annotations.containerKind else {
                throw TTRPCError.status(.failedPrecondition, "container \(request.id) joins a pod whose sandbox this shim did not create")
            }
            if kind == Annotations.sandboxKind, annotations[Annotations.snapshot] == nil {
                // The CRI names only the pause image for a pod, not the image its containers
                // need, so there is nothing sound to boot; refused rather than guessed.
                throw TTRPCError.status(.failedPrecondition, "a Kubernetes pod on clade's runtime needs the \(Annotations.snapshot) annotation naming the snapshot its VM forks (a tag on this node or a registry reference); pods without it are not supported yet")
            }
            // Reserve the slot so a concurrent Create for the same pod waits for this machine.
            processes[key] = placeholder(key, request, spec: spec, runsInGuest: runsInGuest)
            do {
                try await makeMachine(for: request, spec: spec)
            } catch {
                processes[key] = nil
                throw error
            }
        }
        var entry = placeholder(key, request, spec: spec, runsInGuest: runsInGuest)
        if runsInGuest, imageRoot, let sandboxID {
            do {
                entry.root = try await bringInImageRoot(request, sandboxID: sandboxID)
            } catch {
                if machineOwner == request.id { processes[key] = nil; await endMachine() }
                throw error
            }
        }
        entry.status = .created
        processes[key] = entry
        var event = Containerd_Events_TaskCreate()
        event.containerID = request.id
        event.bundle = request.bundle
        event.rootfs = request.rootfs
        event.io.stdin = request.stdin
        event.io.stdout = request.stdout
        event.io.stderr = request.stderr
        event.io.terminal = request.terminal
        event.pid = UInt32(vmmPid)
        await events.publish("/tasks/create", event)
        return UInt32(vmmPid)
    }

    private func placeholder(_ key: ProcessKey, _ request: Containerd_Task_V2_CreateTaskRequest, spec: RuntimeSpec, runsInGuest: Bool) -> ShimProcess {
        ShimProcess(
            key: key, spec: spec.process ?? RuntimeProcess(), bundle: request.bundle, terminal: request.terminal,
            stdin: request.stdin, stdout: request.stdout, stderr: request.stderr, runsInGuest: runsInGuest)
    }

    /// Registers an exec; it runs at its Start.
    func exec(_ request: Containerd_Task_V2_ExecProcessRequest) async throws {
        let container = try process(ProcessKey(container: request.id, exec: ""))
        guard container.status == .running else {
            throw TTRPCError.status(.failedPrecondition, "container \(request.id) is not running; exec needs a running container")
        }
        let key = ProcessKey(container: request.id, exec: request.execID)
        guard processes[key] == nil else { throw TTRPCError.status(.alreadyExists, "exec \(key) already exists") }
        let spec: RuntimeProcess
        do {
            spec = try JSONDecoder().decode(RuntimeProcess.self, from: request.spec.value)
        } catch {
            throw TTRPCError.status(.invalidArgument, "exec \(key)'s process spec is not an OCI process: \(error)")
        }
        guard !(spec.args?.isEmpty ?? true) else { throw TTRPCError.status(.invalidArgument, "exec \(key) has no args") }
        var entry = ShimProcess(
            key: key, spec: spec, bundle: container.bundle, terminal: request.terminal, stdin: request.stdin,
            stdout: request.stdout, stderr: request.stderr, runsInGuest: true)
        // An exec runs where its container does.
        entry.root = container.root
        processes[key] = entry
        var event = Containerd_Events_TaskExecAdded()
        event.containerID = request.id
        event.execID = request.execID
        await events.publish("/tasks/exec-added", event)
    }

    /// Starts a created process; returns the pid containerd records.
    func start(_ key: ProcessKey) async throws -> UInt32 {
        var entry = try process(key)
        guard entry.status == .created else { throw TTRPCError.status(.failedPrecondition, "\(key) was already started") }
        guard let sandboxID else { throw TTRPCError.status(.failedPrecondition, "the pod has no VM") }
        if entry.runsInGuest {
            entry.io = try await launch(entry, in: sandboxID)
        }
        entry.status = .running
        processes[key] = entry
        if key.exec.isEmpty {
            var event = Containerd_Events_TaskStart()
            event.containerID = key.container
            event.pid = UInt32(vmmPid)
            await events.publish("/tasks/start", event)
        } else {
            var event = Containerd_Events_TaskExecStarted()
            event.containerID = key.container
            event.execID = key.exec
            event.pid = UInt32(vmmPid)
            await events.publish("/tasks/exec-started", event)
        }
        return UInt32(vmmPid)
    }

    /// Records how a process ended, tells containerd, and wakes its waiters.
    func exited(_ key: ProcessKey, status: UInt32) async {
        guard var entry = processes[key], entry.status != .stopped else { return }
        entry.status = .stopped
        entry.exitStatus = status
        entry.exitedAt = Date()
        entry.io?.close()
        processes[key] = entry
        var event = Containerd_Events_TaskExit()
        event.containerID = key.container
        event.id = key.exec.isEmpty ? key.container : key.exec
        event.pid = UInt32(vmmPid)
        event.exitStatus = status
        event.exitedAt = (entry.exitedAt ?? Date()).protobufTimestamp
        if unansweredKills.contains(key) {
            heldExits.append((key, event))
        } else {
            await announceExit(key, event)
        }
    }

    /// Tells containerd a process ended: its exit event, and the answers of its waiting `Wait`s
    /// (from which the CRI learns of the exit as well).
    private func announceExit(_ key: ProcessKey, _ event: Containerd_Events_TaskExit) async {
        await events.publish("/tasks/exit", event)
        for waiter in waiters.removeValue(forKey: key) ?? [] { waiter.resume() }
    }

    /// A Kill's answer was written: publishes the exits no unanswered Kill holds any more.
    func killAnswered() async {
        if !unansweredKills.isEmpty { unansweredKills.removeFirst() }
        let ready = heldExits.filter { !unansweredKills.contains($0.key) }
        heldExits.removeAll { !unansweredKills.contains($0.key) }
        for held in ready { await announceExit(held.key, held.event) }
    }

    /// Returns once the process has ended.
    func wait(_ key: ProcessKey) async throws -> ShimProcess {
        let entry = try process(key)
        if entry.status != .stopped || heldExits.contains(where: { $0.key == key }) {
            await withCheckedContinuation { continuation in waiters[key, default: []].append(continuation) }
        }
        return try process(key)
    }
}

/// The annotations the shim reads.
enum Annotations {
    /// The snapshot a pod forks: a local tag or a registry reference.
    static let snapshot = "clade.dev/snapshot"
    /// The CRI's pod grouping: one shim serves every container of a pod.
    static let sandboxID = "io.kubernetes.cri.sandbox-id"
    static let containerType = "io.kubernetes.cri.container-type"
    static let sandboxKind = "sandbox"
    static let containerKind = "container"
    /// A clade network policy for the pod's guest (`none`, `outbound`, `allow:…`, `deny:…`).
    static let network = "clade.dev/network"
    /// `false`: pull a registry reference whole before the pod starts, instead of lazily.
    static let lazy = "clade.dev/lazy"
}
