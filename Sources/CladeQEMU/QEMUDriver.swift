#if canImport(Glibc)
import Glibc
#endif
import CLinuxShims
import CladeStore
import CladeVMM
import Foundation
import Logging

/// The QEMU backend: `qemu-system-x86_64 -M microvm`, detached (not daemonized: its seccomp
/// filter forbids spawning), one QMP socket per machine,
/// qcow2 disk chains through `qemu-img`.
public struct QEMUDriver: VMBackend {
    public let name = "qemu"
    /// Live memory copies also depend on the host and on where a machine's RAM lives:
    /// see ``liveMemoryCopyBlocker(memoryFile:unprivilegedProcess:)``.
    public let capabilities = BackendCapabilities.all
    public let executable: String
    public var disks: any DiskChain { QEMUImage() }
    private let logger: Logger

    static let installFix = "install it with scripts/install-deps.sh (apt-get install qemu-system-x86 qemu-utils)"

    public init(executable: String = "qemu-system-x86_64", logger: Logger = Logger(label: "clade.qemu")) {
        self.executable = executable
        self.logger = logger
    }

    public func version() throws -> String {
        guard ExternalCommand.locate(executable) != nil else {
            throw VMMError.backendMissing(backend: name, program: executable, fix: Self.installFix)
        }
        let output = try ExternalCommand(executable, ["--version"]).check().stdout
        // "QEMU emulator version 7.2.22 (Debian ...)"
        let words = output.split(whereSeparator: \.isWhitespace)
        if let index = words.firstIndex(of: "version"), index + 1 < words.count { return String(words[index + 1]) }
        return output.split(separator: "\n").first.map(String.init) ?? "unknown"
    }

    public func launch(_ spec: MachineSpec) async throws -> any VMHandle {
        try await launch(spec, extraArguments: [])
    }

    /// Launches with arguments appended after the machine definition (benchmarks' `-loadvm`).
    public func launch(_ spec: MachineSpec, extraArguments: [String]) async throws -> QEMUMachine {
        guard let qemu = ExternalCommand.locate(executable) else {
            throw VMMError.backendMissing(backend: name, program: executable, fix: Self.installFix)
        }
        let files = QEMURuntimeFiles(directory: spec.runtimeDirectory)
        for socket in [files.qmpSocket, files.agentSocket] where socket.path.utf8.count > 107 {
            throw VMMError.socketPathTooLong(socket.path)
        }
        for stale in [files.qmpSocket, files.agentSocket, files.pidFile] { try? FileSystem.remove(stale) }
        try handOver(spec)
        let arguments = QEMUCommandLine.arguments(for: spec, extra: extraArguments)
        logger.debug("starting qemu", metadata: ["vm": "\(spec.name)", "accel": "\(spec.accelerator.rawValue)", "mount_view": "\(spec.confinement.privateMountView)"])
        let launchFailure = { (fallback: String) -> VMMError in
            let output = (try? String(contentsOf: files.launchLog, encoding: .utf8)) ?? ""
            let message = output.split(separator: "\n").filter { !$0.isEmpty }.suffix(3).joined(separator: "; ")
            if QEMUCommandLine.isForwardingFailure(message) { return VMMError.agentPortTaken(port: spec.agentPort) }
            return VMMError.launchFailed(backend: self.name, reason: message.isEmpty ? fallback : message)
        }
        // An unprivileged machine's network helper ends with QEMU: it watches a pipe whose
        // write end only QEMU keeps.
        var helper: URL?
        var exitPipe: [Int32] = [-1, -1]
        if spec.confinement.userNamespace {
            switch MachineConfinement.userNetworkHelper {
            case .success(let found): helper = found
            case .failure(let reason): throw VMMError.confinementFailed(what: "give the guest a network", reason: "\(reason)", fix: "see `clade doctor`")
            }
            guard clade_pipe_cloexec(&exitPipe) == 0 else { throw StoreError.systemCall("pipe", path: spec.runtimeDirectory.path, errno: errno) }
        }
        defer { exitPipe.filter { $0 >= 0 }.forEach { close($0) } }
        if spec.guestNetworkDescriptor != nil, spec.confinement.userNamespace {
            throw VMMError.confinementFailed(
                what: "attach the guest to a pod's network namespace", reason: "an unprivileged VMM's one kept descriptor is its network helper's",
                fix: "run the containerd shim as root, as containerd does")
        }
        // QEMU keeps one descriptor of ours: the pod's tap, or the network helper's exit pipe.
        let kept = spec.guestNetworkDescriptor ?? exitPipe[1]
        let begun = Date()
        func elapsed() -> String { "\(Int(Date().timeIntervalSince(begun) * 1000))ms" }
        let pid: Int32
        do {
            if spec.confinement.privateMountView {
                let view = try QEMUMountView.jail(for: spec, keeping: kept)
                pid = try DetachedLauncher.start(qemu, arguments: arguments + view.arguments, log: files.launchLog, jail: view.jail)
            } else if kept >= 0 {
                var jail = DetachedLauncher.Jail()
                jail.keptDescriptor = kept
                pid = try DetachedLauncher.start(qemu, arguments: arguments, log: files.launchLog, jail: jail)
            } else {
                pid = try DetachedLauncher.start(qemu, arguments: arguments, log: files.launchLog)
            }
        } catch {
            throw launchFailure("\(error)")
        }
        if exitPipe[1] >= 0 {
            close(exitPipe[1])
            exitPipe[1] = -1
        }
        let spawned = elapsed()
        let machine = QEMUMachine(files: files, pid: pid, logger: logger)
        // The control group is joined while QEMU starts, not after: its vCPUs run only once clade
        // resumes them, so nothing escapes the limits, and the move (a cgroup v1 host's first
        // one waits out an RCU grace period, ~10-20 ms) leaves the launch's critical path.
        let confining = spec.confinement.controlGroup.map { group in
            Task { try await onOwnThread { try group.groups.confine(pid: pid, sandbox: group.name, limits: group.limits) } }
        }
        guard await machine.waitUntilReady() else {
            let directoryGone = (try? FileSystem.status(of: spec.runtimeDirectory)) == nil
            await machine.stop()
            if let group = spec.confinement.controlGroup {
                _ = await confining?.result
                group.groups.remove(sandbox: group.name)
            }
            throw launchFailure(Self.silentExitReason(pid: pid, after: elapsed(), directoryGone: directoryGone))
        }
        let ready = elapsed()
        if let helper {
            do {
                if let policy = spec.confinement.namespaceFirewall {
                    try NamespaceFirewall.apply(policy, toNamespaceOf: pid)
                }
                try QEMUUserNetwork.start(helper: helper, pid: pid, files: files, exitDescriptor: exitPipe[0])
                try await QEMUUserNetwork.forward(host: spec.agentPort, guest: spec.agentPort, socket: files.networkHelperSocket)
            } catch {
                await machine.stop()
                throw error
            }
        }
        if let group = spec.confinement.controlGroup, let confining {
            do {
                try await confining.value
            } catch {
                await machine.stop()
                group.groups.remove(sandbox: group.name)
                throw error
            }
        }
        // Where a launch's time goes, for `-vv`: the detached spawn (jail included), QEMU's own
        // start until its monitor answers, then the network helper and the control group.
        logger.debug("qemu launched", metadata: ["vm": "\(spec.name)", "spawned": "\(spawned)", "monitor_ready": "\(ready)", "confined": "\(elapsed())"])
        return machine
    }

    /// Why a QEMU that wrote nothing is gone before its monitor answered, with where to look: a
    /// process that exits on an error says so on stderr, so silence means a signal.
    static func silentExitReason(pid: Int32, after elapsed: String, directoryGone: Bool) -> String {
        if directoryGone {
            return "QEMU (pid \(pid)) lost its machine directory \(elapsed) after starting, before its monitor answered: something removed the sandbox while it was being set up"
        }
        return "QEMU (pid \(pid)) exited \(elapsed) after starting, before its monitor answered, and wrote nothing: a signal ended it "
            + "(the kernel log, `dmesg`, names a crash, a seccomp kill or the OOM killer)"
    }

    /// QEMU opens its files as root, then drops to the sandbox's uid; it reopens the root disk
    /// read-write when a restored guest continues, and maps a machine's own memory file shared:
    /// those two belong to the sandbox. Snapshot files (read-only layers, a fork's private RAM
    /// source) stay clade's.
    private func handOver(_ spec: MachineSpec) throws {
        guard geteuid() == 0, let identity = spec.confinement.identity else { return }
        var files = [spec.rootDisk]
        if !spec.restoring || spec.restoreIntoSharedMemory { files.append(spec.memoryFile) }
        for file in files where FileManager.default.fileExists(atPath: file.path) {
            guard chown(file.path, identity.uid, identity.gid) == 0 else { throw StoreError.systemCall("chown", path: file.path, errno: errno) }
        }
    }

    public func attach(runtimeDirectory: URL, pid: Int32?) -> any VMHandle {
        machine(runtimeDirectory: runtimeDirectory, pid: pid)
    }

    /// A typed handle, for callers that need QEMU itself (benchmarks' QMP commands).
    public func machine(runtimeDirectory: URL, pid: Int32?) -> QEMUMachine {
        let files = QEMURuntimeFiles(directory: runtimeDirectory)
        return QEMUMachine(files: files, pid: pid ?? ProcessControl.readPidFile(files.pidFile) ?? 0, logger: logger)
    }

    public func deviceLayout(for spec: MachineSpec) -> [String] { QEMUCommandLine.deviceDrivers(for: spec) }

    public func probeAccelerator(kernel: URL, initrd: URL, workDirectory: URL) async throws -> AcceleratorChoice {
        await AcceleratorProbe(logger: logger).probe(kernel: kernel, initrd: initrd, workDirectory: workDirectory, backendVersion: try version())
    }

    public func hostChecks() -> [BackendCheck] {
        var checks: [BackendCheck] = []
        do {
            let version = try self.version()
            let major = Int(version.split(separator: ".").first ?? "") ?? 0
            let minor = Int(version.split(separator: ".").dropFirst().first ?? "") ?? 0
            let recentEnough = major > 7 || (major == 7 && minor >= 2)
            checks.append(BackendCheck(
                name: "qemu", ok: recentEnough, warningOnly: true,
                detail: "\(executable) \(version)" + (recentEnough ? "" : " (clade is tested with 7.2 and newer)"),
                fix: recentEnough ? nil : "install QEMU 7.2 or newer"))
        } catch {
            checks.append(BackendCheck(name: "qemu", ok: false, detail: "\(error)", fix: "scripts/install-deps.sh"))
        }
        let found = ExternalCommand.locate("qemu-img") != nil
        checks.append(BackendCheck(
            name: "qemu-img", ok: found, detail: found ? "found" : "qemu-img not found",
            fix: found ? nil : "apt-get install qemu-utils"))
        checks.append(liveBranchCheck())
        return checks
    }
}
