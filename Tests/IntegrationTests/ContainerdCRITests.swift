import CladeStore
import Foundation
import Testing

/// The Kubernetes path: containerd's CRI plugin, driven by the kubelet's calls (a gRPC client
/// written for the test, `Tests/Fixtures/cri-client.py`), with clade as the runtime and CNI's
/// bridge plugin giving pods their network namespaces.
@Suite(.serialized) final class ContainerdCRITests {
    let containerd: ContainerdProcess
    let cli: CLIHarness
    let image = ContainerdShimTests.image
    static let store = ContainerdShimTests.bakedStore("cri")

    init() throws {
        if let missing = ContainerdProcess.missingForCRI {
            print("ContainerdCRITests skipped: \(missing)")
            throw HarnessError("skipped: \(missing)")
        }
        cli = try Self.store.get()
        containerd = ContainerdProcess(cli: cli)
        try containerd.start(sandboxImage: image)
        try ContainerdShimTests.importTestImage(into: containerd, namespace: "k8s.io")
    }

    deinit {
        containerd.stop()
    }

    @Test func aPodForksASnapshotRunsAContainerAndExecsAndGoesAwayCleanly() throws {
        let pod = try containerd.cri(["run-pod", "web", "clade", "clade.dev/snapshot=\(ContainerdShimTests.snapshot)"])
        try #require(pod.status == 0, "RunPodSandbox: \(pod.json)")
        let podID = try #require(pod.json["id"] as? String)
        let podStatus = try containerd.cri(["pod-status", podID]).json
        #expect(podStatus["state"] as? String == "SANDBOX_READY")
        #expect(cli.qemuProcesses().count == 1, "one VM for the pod")

        // The pod's network: CNI's namespace, the guest on the pod's address.
        let address = try #require(podStatus["ip"] as? String, "\(podStatus)")
        let probe = try PodNetworkProbe(gateway: containerd.gateway)
        let server = try containerd.cri(["create", podID, "web", image, "--", "/bin/sh", "-c",
            "mkdir -p /tmp/www && echo served-by-the-guest > /tmp/www/index.html && exec /.clade/bin/busybox httpd -f -p 8080 -h /tmp/www"])
        let web = try #require(server.json["id"] as? String, "CreateContainer: \(server.json)")
        #expect(try containerd.cri(["start", web]).status == 0)
        let served = try ContainerdProcess.waitFor { try PodNetworkProbe.fetch(address, port: 8080, path: "/index.html") == "served-by-the-guest\n" }
        #expect(served, "the pod's IP \(address) serves the guest's HTTP server to another namespace")
        #expect(try !PodNetworkProbe.opens(address, port: 8888), "the guest agent is not reachable at the pod's IP")
        let outbound = try containerd.cri(["exec-sync", web, "30", "--"] + probe.guestFetch).json
        #expect(outbound["stdout"] as? String == address, "the guest's traffic leaves through the pod's namespace with the pod's address: \(outbound)")
        let identity = try containerd.cri(["exec-sync", web, "30", "--", "/bin/sh", "-c", "hostname; /.clade/bin/busybox ip -4 -o address show dev eth0"]).json
        let identityText = identity["stdout"] as? String ?? ""
        #expect(identityText.hasPrefix("web\n") && identityText.contains("inet \(address)/"), "the guest has the pod's hostname and address: \(identity)")

        let created = try containerd.cri(["create", podID, "app", image, "--", "/bin/sh", "-c", "echo app-started; cat /etc/baked > /tmp/seen; sleep 3; exit 7"])
        try #require(created.status == 0, "CreateContainer: \(created.json)")
        let container = try #require(created.json["id"] as? String)
        #expect(try containerd.cri(["start", container]).status == 0)
        #expect(try containerd.cri(["status", container]).json["state"] as? String == "CONTAINER_RUNNING")

        let exec = try containerd.cri(["exec-sync", container, "30", "--", "/bin/sh", "-c", "cat /etc/baked; echo to-stderr >&2; exit 2"])
        #expect(exec.json["stdout"] as? String == "baked-into-the-snapshot\n", "ExecSync sees the snapshot's state: \(exec.json)")
        #expect(exec.json["stderr"] as? String == "to-stderr\n")
        #expect(exec.json["exit_code"] as? Int == 2)
        #expect(cli.qemuProcesses().count == 1, "the container and the exec ran in the pod's VM")

        let exited = try ContainerdProcess.waitFor { try self.containerd.cri(["status", container]).json["state"] as? String == "CONTAINER_EXITED" }
        #expect(exited)
        #expect(try containerd.cri(["status", container]).json["exit_code"] as? Int == 7, "ContainerStatus carries the exit code")

        let stopped = try containerd.cri(["stop-pod", podID])
        #expect(stopped.status == 0, "StopPodSandbox: \(stopped.json)")
        #expect(try containerd.cri(["stop-pod", podID]).status == 0, "stopping a pod twice is harmless")
        #expect(try containerd.cri(["remove-pod", podID]).status == 0)
        try ContainerdProcess.waitFor { self.containerd.shims().isEmpty && self.cli.qemuProcesses().isEmpty }
        #expect(cli.qemuProcesses().isEmpty, "no VM left")
        #expect(cli.sandboxDirectories().isEmpty, "no clade sandbox left")
        #expect(containerd.shims().isEmpty, "no shim left")
        #expect(containerd.mounts().isEmpty, "no mount left: \(containerd.mounts())")
    }

    @Test func clade_sNetworkPolicyAppliesInThePodsNamespace() throws {
        let pod = try containerd.cri(["run-pod", "fenced", "clade", "clade.dev/snapshot=\(ContainerdShimTests.snapshot)", "clade.dev/network=deny:\(containerd.gateway)/32"])
        let podID = try #require(pod.json["id"] as? String, "RunPodSandbox: \(pod.json)")
        let probe = try PodNetworkProbe(gateway: containerd.gateway)
        let created = try containerd.cri(["create", podID, "idle", image, "--", "/bin/sh", "-c", "sleep 120"])
        let container = try #require(created.json["id"] as? String, "CreateContainer: \(created.json)")
        #expect(try containerd.cri(["start", container]).status == 0)
        let refused = try containerd.cri(["exec-sync", container, "30", "--"] + probe.guestFetch).json
        #expect(refused["exit_code"] as? Int != 0 && (refused["stdout"] as? String ?? "").isEmpty, "a denied destination is refused in the pod's namespace: \(refused)")
        #expect(try containerd.cri(["stop-pod", podID]).status == 0)
        #expect(try containerd.cri(["remove-pod", podID]).status == 0)
        try ContainerdProcess.waitFor { self.containerd.shims().isEmpty && self.cli.qemuProcesses().isEmpty }
    }

    @Test func podsThatCannotBeMadeAreRefusedWithTheReason() throws {
        let unannotated = try containerd.cri(["run-pod", "plain", "clade"])
        #expect(unannotated.status != 0)
        #expect((unannotated.json["error"] as? String ?? "").contains("needs the clade.dev/snapshot annotation"), "\(unannotated.json)")
        let unknown = try containerd.cri(["run-pod", "unknown", "clade", "clade.dev/snapshot=no-such-snapshot"])
        #expect(unknown.status != 0)
        #expect((unknown.json["error"] as? String ?? "").contains("no snapshot named 'no-such-snapshot'"), "\(unknown.json)")

        let malformed = try containerd.cri(["run-pod", "badpolicy", "clade", "clade.dev/snapshot=\(ContainerdShimTests.snapshot)", "clade.dev/network=everything"])
        #expect(malformed.status != 0)
        #expect((malformed.json["error"] as? String ?? "").contains("clade.dev/network"), "\(malformed.json)")
        #expect(cli.qemuProcesses().isEmpty, "a refused pod leaves no VM")
        let pod = try containerd.cri(["run-pod", "noimage", "clade", "clade.dev/snapshot=\(ContainerdShimTests.snapshot)"])
        let podID = try #require(pod.json["id"] as? String, "\(pod.json)")
        let missingImage = try containerd.cri(["create", podID, "app", "docker.io/library/not-here:1", "--", "/bin/true"])
        #expect(missingImage.status != 0)
        #expect((missingImage.json["error"] as? String ?? "").contains("not-here"), "\(missingImage.json)")
        #expect(try containerd.cri(["stop-pod", podID]).status == 0)
        #expect(try containerd.cri(["remove-pod", podID]).status == 0)
        try ContainerdProcess.waitFor { self.containerd.shims().isEmpty && self.cli.qemuProcesses().isEmpty }
        #expect(cli.qemuProcesses().isEmpty && cli.sandboxDirectories().isEmpty, "refused pods leave no VM")
    }
}
