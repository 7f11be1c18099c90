import CladeEngine
import CladeModel
import CladePack
import CladeStore
import CladeVMM
import Foundation

extension ShimPod {
    /// The file in a bundle naming the clade sandbox its container made, so that `delete` can
    /// end the VM after the shim itself died.
    static let sandboxMarker = "clade-sandbox"

    /// Makes the pod's VM: a fork of the snapshot the `clade.dev/snapshot` annotation names,
    /// or a cold boot of the container's own root filesystem.
    func makeMachine(for request: Containerd_Task_V2_CreateTaskRequest, spec: RuntimeSpec) async throws {
        let record: SandboxRecord
        if let requested = spec.annotations?[Annotations.snapshot] {
            let tag = try await localSnapshot(for: requested, lazy: spec.annotations?[Annotations.lazy] != "false")
            let policy = try podPolicy(spec)
            let effectivePolicy: NetworkPolicy
            if let policy { effectivePolicy = policy } else { effectivePolicy = await snapshotPolicy(tag) }
            let attachment = try attachPodNetwork(spec, policy: effectivePolicy)
            let outcomes: [ForkOutcome]
            do {
                defer { if let attachment { close(attachment.tap) } }
                outcomes = try await engine.forks.fork(
                    tag: tag, count: 1, memoryOrder: engine.forks.serviceMemoryOrder, network: policy,
                    attachment: attachment.map { GuestNetworkAttachment(tapDescriptor: $0.tap, agentPort: $0.relay.port) })
            } catch {
                attachment?.relay.stop()
                throw ShimErrors.translate(error, doing: "fork snapshot '\(requested)' for container \(request.id)")
            }
            guard let outcome = outcomes.first, let forked = outcome.record else {
                attachment?.relay.stop()
                throw TTRPCError.status(.unavailable, "cannot fork snapshot '\(requested)' for container \(request.id): \(outcomes.first?.error ?? "no child started")")
            }
            record = forked
            try await adopt(attachment, for: forked.id, spec: spec)
            // A fork's memory size is the snapshot's; its host CPU ceiling follows the spec.
            if let cores = spec.linux?.resources?.cpuCores {
                do {
                    try engine.controlGroups.adjust(sandbox: forked.id, memoryBytes: nil, cpuCores: cores)
                } catch {
                    try? await engine.sandboxes.kill(id: forked.id)
                    throw ShimErrors.translate(error, doing: "apply container \(request.id)'s CPU limit to its VM")
                }
            }
        } else {
            let image = try imageForRootfs(request, spec: spec)
            var options = BootOptions(image: image)
            options.network = try podPolicy(spec)
            if let memory = spec.linux?.resources?.memoryMiB { options.memoryMiB = max(MachineSpec.memoryRange.lowerBound, min(memory, MachineSpec.memoryRange.upperBound)) }
            if let cpus = spec.linux?.resources?.cpus { options.cpus = max(MachineSpec.cpuRange.lowerBound, min(cpus, MachineSpec.cpuRange.upperBound)) }
            let attachment = try attachPodNetwork(spec, policy: options.network ?? .standard)
            options.attachment = attachment.map { GuestNetworkAttachment(tapDescriptor: $0.tap, agentPort: $0.relay.port) }
            do {
                defer { if let attachment { close(attachment.tap) } }
                record = try await engine.sandboxes.boot(options)
            } catch {
                attachment?.relay.stop()
                throw ShimErrors.translate(error, doing: "boot a VM from container \(request.id)'s image")
            }
            try await adopt(attachment, for: record.id, spec: spec)
        }
        sandboxID = record.id
        vmmPid = record.pid ?? 0
        machineOwner = request.id
        ownerBundle = request.bundle
        let marker = URL(fileURLWithPath: request.bundle).appendingPathComponent(Self.sandboxMarker)
        try? Data(record.id.utf8).write(to: marker, options: .atomic)
        logger.info("pod VM running", metadata: ["sandbox": "\(record.id)", "container": "\(request.id)", "pid": "\(vmmPid)"])
    }

    /// A snapshot tag in this node's store for what the annotation names. A registry reference
    /// is pulled once per node, under a tag derived from the reference, and reused after; lazily
    /// (the pod starts before the memory has arrived) where the node can serve memory over FUSE,
    /// unless `lazy` is false.
    func localSnapshot(for requested: String, lazy: Bool = true) async throws -> String {
        let trimmed = requested.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else {
            throw TTRPCError.status(.invalidArgument, "the \(Annotations.snapshot) annotation is empty; give a snapshot tag or a registry reference")
        }
        guard trimmed.contains("/") else {
            do {
                try Names.validate(trimmed, kind: "snapshot")
            } catch {
                throw TTRPCError.status(.invalidArgument, "the \(Annotations.snapshot) annotation '\(requested)' is neither a snapshot tag nor a registry reference: \(error)")
            }
            return trimmed
        }
        let reference: RegistryReference
        do {
            reference = try RegistryReference(parsing: trimmed)
        } catch {
            throw TTRPCError.status(.invalidArgument, "the \(Annotations.snapshot) annotation '\(requested)' is not a registry reference: \(error)")
        }
        do {
            // Lazily where the node can: the pod starts before the snapshot's memory has arrived.
            return try await engine.packs.snapshotForFork(reference, access: .fromEnvironment(for: reference), lazy: lazy)
        } catch {
            throw ShimErrors.translate(error, doing: "pull snapshot \(reference)")
        }
    }

    /// The clade image for a container's root filesystem, built on first use and named by what
    /// identifies its content: the overlay's lower layers (containerd's committed, immutable
    /// snapshots), or the path of a `--rootfs` directory.
    func imageForRootfs(_ request: Containerd_Task_V2_CreateTaskRequest, spec: RuntimeSpec) throws -> String {
        let bundle = URL(fileURLWithPath: request.bundle)
        let identity: String
        let directory: URL
        var mounted = false
        if request.rootfs.isEmpty {
            guard let path = spec.root?.path, !path.isEmpty else {
                throw TTRPCError.status(.invalidArgument, "container \(request.id) has neither rootfs mounts nor root.path; give it an image")
            }
            directory = path.hasPrefix("/") ? URL(fileURLWithPath: path) : bundle.appendingPathComponent(path)
            identity = "path:" + directory.standardizedFileURL.path
        } else {
            directory = bundle.appendingPathComponent("rootfs")
            identity = request.rootfs.map { mount in
                let lasting = mount.options.filter { !$0.hasPrefix("upperdir=") && !$0.hasPrefix("workdir=") }
                return "\(mount.type) \(mount.source) \(lasting.joined(separator: ","))"
            }.joined(separator: "\n")
        }
        let name = "ctr-" + String(Digest.of(Data(identity.utf8)).hex.prefix(20))
        if (try? engine.images.list().contains { $0.name == name }) == true { return name }
        if !request.rootfs.isEmpty {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            for mount in request.rootfs { try Self.mount(mount, at: directory) }
            mounted = true
        }
        defer { if mounted { Self.unmount(directory) } }
        do {
            try engine.images.build(from: directory, name: name)
        } catch {
            throw ShimErrors.translate(error, doing: "make a VM image of container \(request.id)'s root filesystem")
        }
        return name
    }

    static func mount(_ mount: Containerd_Types_Mount, at target: URL) throws {
        var arguments = ["-t", mount.type]
        if !mount.options.isEmpty { arguments += ["-o", mount.options.joined(separator: ",")] }
        arguments += [mount.source, target.path]
        let output = try ExternalCommand("mount", arguments).run()
        guard output.status == 0 else {
            throw TTRPCError.status(.internalError, "cannot mount the container's rootfs (\(mount.type) at \(target.path)): \(output.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    static func unmount(_ target: URL) {
        _ = try? ExternalCommand("umount", [target.path]).run()
    }

    /// Ends the VM and forgets it.
    func endMachine() async {
        guard let sandboxID else { return }
        do {
            try await engine.sandboxes.kill(id: sandboxID)
        } catch {
            logger.warning("the pod's VM was already gone", metadata: ["sandbox": "\(sandboxID)", "error": "\(error)"])
        }
        self.sandboxID = nil
        podAttachment?.relay.stop()
        podAttachment = nil
        if let owner = machineOwner, let bundle = processes[ProcessKey(container: owner, exec: "")]?.bundle ?? ownerBundle {
            try? FileManager.default.removeItem(at: URL(fileURLWithPath: bundle).appendingPathComponent(Self.sandboxMarker))
        }
    }
}
