import CladeStore
import Foundation
import Testing

@testable import CladeShim

/// What containerd hands the shim: its command line, bundles' config.json, exec specs.
@Suite struct ShimInputTests {
    @Test func containerdsCommandLineParsesInGoFlagSyntax() throws {
        let parsed = try ShimArguments(parsing: ["-namespace", "k8s.io", "-address", "/run/c.sock", "-publish-binary", "/usr/bin/containerd", "-id", "abc", "-debug", "start"])
        #expect(parsed.namespace == "k8s.io")
        #expect(parsed.address == "/run/c.sock")
        #expect(parsed.id == "abc")
        #expect(parsed.debug)
        #expect(parsed.action == "start")
        let delete = try ShimArguments(parsing: ["--id=x", "-bundle", "/b", "delete"])
        #expect(delete.id == "x" && delete.bundle == "/b" && delete.action == "delete")
        #expect(try ShimArguments(parsing: delete.flags + ["serve"]).bundle == "/b", "the flags survive the re-exec")
        #expect(throws: ShimUsageError.self) { try ShimArguments(parsing: ["-id"]) }
        #expect(throws: ShimUsageError.self) { try ShimArguments(parsing: ["-id", "x"]) }
        #expect(throws: ShimUsageError.self) { try ShimArguments(parsing: ["start", "delete"]) }
    }

    @Test func aPodsContainersShareOneSocketAndPodsDoNot() {
        let one = ShimLauncher.socketPath(address: "/run/c.sock", namespace: "k8s.io", group: "pod1")
        #expect(one == ShimLauncher.socketPath(address: "/run/c.sock", namespace: "k8s.io", group: "pod1"))
        #expect(one != ShimLauncher.socketPath(address: "/run/c.sock", namespace: "k8s.io", group: "pod2"))
        #expect(one != ShimLauncher.socketPath(address: "/run/c.sock", namespace: "default", group: "pod1"))
        #expect(one.utf8.count < 108, "fits a unix socket address")
    }

    @Test func aRuntimeSpecGivesTheProcessAndResources() throws {
        let bundle = FileManager.default.temporaryDirectory.appendingPathComponent("bundle-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: bundle, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: bundle) }
        let json = """
            {"ociVersion": "1.0.2", "process": {"terminal": true, "consoleSize": {"height": 40, "width": 120},
              "user": {"uid": 1000, "gid": 100}, "args": ["sh", "-c", "echo"], "env": ["A=1", "B=x=y", "A=2", "junk"], "cwd": "/w"},
             "root": {"path": "rootfs"}, "annotations": {"clade.dev/snapshot": "py"},
             "linux": {"resources": {"memory": {"limit": 536870912}, "cpu": {"quota": 150000, "period": 100000}}, "namespaces": [{"type": "network"}]}}
            """
        try json.write(to: bundle.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        let spec = try RuntimeSpec.load(bundle: bundle.path)
        #expect(spec.process?.args == ["sh", "-c", "echo"])
        #expect(spec.process?.environment == ["A": "2", "B": "x=y"], "a later entry wins; an entry without '=' is dropped")
        #expect(spec.process?.agentUser == "1000:100")
        #expect(spec.process?.consoleSize?.width == 120)
        #expect(spec.annotations?["clade.dev/snapshot"] == "py")
        #expect(spec.linux?.resources?.memoryMiB == 512)
        #expect(spec.linux?.resources?.cpus == 2, "a 1.5-CPU quota rounds up to 2 vCPUs")

        try "{not json".write(to: bundle.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        #expect {
            try RuntimeSpec.load(bundle: bundle.path)
        } throws: { error in
            guard case TTRPCError.status(.invalidArgument, let message) = error else { return false }
            return message.contains("not an OCI runtime spec")
        }
        #expect(throws: TTRPCError.self) { try RuntimeSpec.load(bundle: "/nonexistent-bundle") }
    }

    @Test func processTagsAreUniqueAndFitTheAgentsLimit() {
        let container = ProcessKey(container: "c1", exec: "")
        let exec = ProcessKey(container: "c1", exec: "e1")
        #expect(container.agentTag == "ctr-c1")
        #expect(exec.agentTag == "ctr-c1-exec-e1")
        let long = ProcessKey(container: String(repeating: "a", count: 64), exec: String(repeating: "b", count: 80))
        #expect(long.agentTag.utf8.count <= 128)
        #expect(long.agentTag != ProcessKey(container: String(repeating: "a", count: 64), exec: String(repeating: "c", count: 80)).agentTag)
    }

    @Test func everyErrorCategoryHasAStatusContainerdUnderstands() {
        for category in ErrorCategory.allCases {
            #expect(ShimErrors.code(for: category) != .ok)
        }
        #expect(ShimErrors.code(for: .notFound) == .notFound)
        #expect(ShimErrors.code(for: .badInput) == .invalidArgument)
        struct Plain: Error {}
        guard case .status(.internalError, let message) = ShimErrors.translate(Plain(), doing: "fork") else {
            Issue.record("an uncategorized error is internal")
            return
        }
        #expect(message.hasPrefix("cannot fork"))
    }
}
