import Foundation
import Testing

/// Bad input gets a one-line actionable error, a non-zero exit, and leaves nothing behind.
@Suite(.serialized) struct BadInputTests {
    /// A store of its own, so work of other suites (image builds in tmp/) cannot be mistaken for leftovers.
    static let home = CLIHarness.privateHome("badinput")
    let cli = CLIHarness(home: BadInputTests.home)

    func expectCleanFailure(_ result: CLIHarness.Result, mentioning phrase: String, in harness: CLIHarness) {
        #expect(result.status != 0)
        #expect(result.stderr.contains(phrase), "stderr was: \(result.stderr)")
        let errorLines = result.stderr.split(separator: "\n").filter { $0.contains("Error") || $0.contains("error") }
        #expect(errorLines.count <= 1, "expected one error line, got: \(result.stderr)")
        #expect(harness.sandboxDirectories().isEmpty)
        #expect(harness.qemuProcesses().isEmpty)
        let temporary = harness.home.appendingPathComponent("tmp")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: temporary.path)) ?? []).isEmpty)
    }

    @Test func unknownImage() throws {
        let result = try cli.run(["run", "--image", "no-such-image", "--", "true"])
        expectCleanFailure(result, mentioning: "clade image build", in: cli)
    }

    @Test func zeroMemory() throws {
        let result = try cli.run(["run", "--memory", "0", "--", "true"])
        expectCleanFailure(result, mentioning: "--memory must be between", in: cli)
    }

    @Test func missingSourceDirectory() throws {
        let result = try cli.run(["image", "build", "--from-dir", "/nonexistent/clade-input", "--name", "x"])
        expectCleanFailure(result, mentioning: "does not exist", in: cli)
    }

    @Test func pathLikeNamesAndIDs() throws {
        let image = try cli.run(["image", "build", "--from-dir", "/tmp", "--name", "../evil"])
        expectCleanFailure(image, mentioning: "not a valid name", in: cli)
        let exec = try cli.run(["exec", "../../etc", "--", "true"])
        expectCleanFailure(exec, mentioning: "sandbox ids are 12 lowercase hex digits", in: cli)
    }

    @Test func missingKernel() throws {
        var fresh = CLIHarness()
        fresh.home = FileManager.default.temporaryDirectory.appendingPathComponent("clade-nokernel-\(getpid())")
        let emptyKernelDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("clade-empty-kernel-\(getpid())")
        try FileManager.default.createDirectory(at: emptyKernelDirectory, withIntermediateDirectories: true)
        fresh.environment["CLADE_KERNEL_DIR"] = emptyKernelDirectory.path
        // An explicit CLADE_KERNEL_DIR is the only place searched, so an empty one means "no kernel".
        defer {
            try? FileManager.default.removeItem(at: fresh.home)
            try? FileManager.default.removeItem(at: emptyKernelDirectory)
        }
        let result = try fresh.run(["run", "--", "true"])
        expectCleanFailure(result, mentioning: "install-deps.sh", in: fresh)
        #expect(result.stderr.contains("no guest kernel found"))
    }
}
