import CladeEngine
import CladeGuest
import CladeGuestProtocol
import CladeStore
import Foundation

extension ShimPod {
    /// `clade.dev/container-root: image` runs a container on its own image, brought into the
    /// pod's VM and entered with chroot, instead of on the VM's root (the default for a pod that
    /// forks a snapshot).
    static let containerRootAnnotation = "clade.dev/container-root"

    /// Whether `spec` asks for the container's own image as its root; a value other than the two
    /// known ones is refused rather than guessed.
    static func wantsImageRoot(_ spec: RuntimeSpec) throws -> Bool {
        switch spec.annotations?[containerRootAnnotation] {
        case nil, "vm"?: return false
        case "image"?: return true
        case let other?:
            throw TTRPCError.status(.invalidArgument, "the \(containerRootAnnotation) annotation is '\(other)'; use 'image' (the container's own image, chrooted in the VM) or 'vm' (the VM's root)")
        }
    }

    /// Copies the container's root filesystem (the mounts containerd prepared) into the pod's VM
    /// and returns where it is there. The tree goes through the agent as one tar file, is unpacked
    /// by the guest's `tar`, and gets `/proc`, `/dev` and `/sys` of its own.
    func bringInImageRoot(_ request: Containerd_Task_V2_CreateTaskRequest, sandboxID: String) async throws -> String {
        guard !request.rootfs.isEmpty else {
            throw TTRPCError.status(.invalidArgument, "container \(request.id) asks for its own image as its root, but containerd gave it no rootfs mounts")
        }
        guard try await podAgentFeatures(sandboxID).contains(AgentFeature.chrootedStart) else {
            throw TTRPCError.status(.failedPrecondition, "the pod's VM runs an agent that cannot start a process in a root of its own; bake the snapshot again with this clade to use \(Self.containerRootAnnotation): image")
        }
        let agent = try engine.processes.agent(for: sandboxID)
        let started = Date()
        let bundle = URL(fileURLWithPath: request.bundle)
        let directory = bundle.appendingPathComponent("rootfs")
        let archive = bundle.appendingPathComponent("clade-rootfs.tar")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: archive) }
        do {
            for mount in request.rootfs { try Self.mount(mount, at: directory) }
            defer { Self.unmount(directory) }
            let packed = try ExternalCommand("tar", ["-C", directory.path, "--numeric-owner", "-cf", archive.path, "."]).run()
            guard packed.status == 0 else {
                throw TTRPCError.status(.internalError, "cannot pack container \(request.id)'s root filesystem: \(packed.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
        }
        let base = "/var/lib/clade-containers/" + String(Digest.of(Data(request.id.utf8)).hex.prefix(16))
        do {
            _ = try await agent.makeDirectory(base + "/rootfs", parents: true, mode: 0o755)
            let reader = try FileHandle(forReadingFrom: archive)
            defer { try? reader.close() }
            let bytes = try await agent.upload(to: base + "/rootfs.tar", mode: 0o600) { try reader.read(upToCount: 1 << 20) }
            let prepare = "tar -xf \"$1/rootfs.tar\" -C \"$1/rootfs\" && rm -f \"$1/rootfs.tar\" && mkdir -p \"$1/rootfs/proc\" \"$1/rootfs/dev\" \"$1/rootfs/sys\" "
                + "&& mount -t proc proc \"$1/rootfs/proc\" && mount -o bind /dev \"$1/rootfs/dev\" && mount -t sysfs sysfs \"$1/rootfs/sys\""
            let output = try await engine.sandboxes.exec(id: sandboxID, argv: ["/bin/sh", "-c", prepare, "sh", base], user: "root")
            guard output.exitCode == 0 else {
                throw TTRPCError.status(.failedPrecondition, "the pod's VM could not unpack container \(request.id)'s image (it needs tar and mount): \((output.stderr ?? "").trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            logger.info("container image brought into the VM", metadata: [
                "container": "\(request.id)", "bytes": "\(bytes)", "ms": "\(Int(Date().timeIntervalSince(started) * 1000))"])
        } catch {
            throw ShimErrors.translate(error, doing: "bring container \(request.id)'s image into the pod's VM")
        }
        return base + "/rootfs"
    }

    /// Unmounts and removes a container's root in the guest, best effort (the VM may be gone).
    func removeImageRoot(_ root: String, sandboxID: String) async {
        let base = (root as NSString).deletingLastPathComponent
        let script = "umount -l \"$1/rootfs/sys\" \"$1/rootfs/dev\" \"$1/rootfs/proc\" 2>/dev/null; rm -rf \"$1\""
        _ = try? await engine.sandboxes.exec(id: sandboxID, argv: ["/bin/sh", "-c", script, "sh", base], user: "root")
    }
}
