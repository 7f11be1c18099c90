#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import CladeVMM
import Foundation
import Logging

/// Decides between KVM and TCG by actually booting a guest under KVM.
///
/// `/dev/kvm` existing is not enough: on some hosts it is a software hypervisor on which
/// stock kernels do not boot. The probe boots the kernel with `clade.probe=1`, whose
/// init prints a marker and powers off; only a guest that reaches it proves KVM works.
public struct AcceleratorProbe: Sendable {
    public static let marker = AcceleratorChoice.probeMarker
    public var timeout: Double = 15
    private let logger: Logger

    public init(timeout: Double = 15, logger: Logger = Logger(label: "clade.probe")) {
        self.timeout = timeout
        self.logger = logger
    }

    public func probe(kernel: URL, initrd: URL, workDirectory: URL, backendVersion: String) async -> AcceleratorChoice {
        if let forced = ProcessInfo.processInfo.environment["CLADE_ACCEL"], let accelerator = Accelerator(rawValue: forced) {
            return AcceleratorChoice(accelerator: accelerator, reason: "forced by CLADE_ACCEL=\(forced)", backendVersion: backendVersion)
        }
        guard access("/dev/kvm", R_OK | W_OK) == 0 else {
            let reason = FileManager.default.fileExists(atPath: "/dev/kvm")
                ? "/dev/kvm is not readable and writable by this user (add the user to the kvm group)"
                : "/dev/kvm does not exist (no hardware virtualization, or the kvm module is not loaded)"
            return AcceleratorChoice(accelerator: .tcg, reason: "KVM unusable: \(reason); using TCG", backendVersion: backendVersion)
        }
        let start = Date()
        let outcome = await bootUnderKVM(kernel: kernel, initrd: initrd, workDirectory: workDirectory)
        let seconds = Date().timeIntervalSince(start)
        switch outcome {
        case .success:
            return AcceleratorChoice(accelerator: .kvm, reason: "a test guest booted under KVM in \(String(format: "%.1f", seconds)) s", backendVersion: backendVersion, probeSeconds: seconds)
        case .failure(let reason):
            return AcceleratorChoice(accelerator: .tcg, reason: "KVM rejected: \(reason); using TCG", backendVersion: backendVersion, probeSeconds: seconds)
        }
    }

    private enum Outcome { case success, failure(String) }

    private func bootUnderKVM(kernel: URL, initrd: URL, workDirectory: URL) async -> Outcome {
        let console = workDirectory.appendingPathComponent("probe-console.log")
        let errors = workDirectory.appendingPathComponent("probe-stderr.log")
        try? FileManager.default.createDirectory(at: workDirectory, withIntermediateDirectories: true)
        defer {
            try? FileManager.default.removeItem(at: console)
            try? FileManager.default.removeItem(at: errors)
        }
        let process = Process()
        guard let qemu = ExternalCommand.locate("qemu-system-x86_64") else { return .failure("qemu-system-x86_64 not found") }
        process.executableURL = qemu
        process.arguments = [
            "-machine", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "128M", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-serial", "file:\(console.path)",
            "-kernel", kernel.path, "-initrd", initrd.path,
            "-append", "console=ttyS0 quiet panic=-1 clade.probe=1",
        ]
        _ = FileManager.default.createFile(atPath: errors.path, contents: nil)
        process.standardError = try? FileHandle(forWritingTo: errors)
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch { return .failure("cannot start QEMU: \(error)") }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline {
            if let text = try? String(contentsOf: console, encoding: .utf8), text.contains(Self.marker) { break }
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
        if process.isRunning { process.terminate(); kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        let consoleText = (try? String(contentsOf: console, encoding: .utf8)) ?? ""
        if consoleText.contains(Self.marker) { return .success }
        let stderrText = ((try? String(contentsOf: errors, encoding: .utf8)) ?? "")
            .split(separator: "\n").filter { !$0.isEmpty }.prefix(2).joined(separator: "; ")
        if !stderrText.isEmpty { return .failure("QEMU with -accel kvm failed: \(stderrText)") }
        let lastLine = consoleText.split(separator: "\n").last.map { String($0.prefix(120)) } ?? "no console output"
        return .failure("the test guest did not reach init within \(Int(timeout)) s under KVM (last console line: \(lastLine))")
    }
}
