import CladeGuest
import CladeModel
import CladeStore
import CladeVMM
import Foundation

/// One prerequisite check of `clade doctor`.
public struct DoctorCheck: Codable, Sendable {
    public enum Status: String, Codable, Sendable { case ok, warning, error }
    public var name: String
    public var status: Status
    public var detail: String
    /// The exact command or step that fixes a problem; nil when nothing needs fixing.
    public var fix: String?
    /// For the confinement check: one entry per protection a new VM's VMM gets or lacks.
    public var protections: [String: ProtectionReport]?

    public init(name: String, status: Status, detail: String, fix: String? = nil, protections: [String: ProtectionReport]? = nil) {
        self.name = name
        self.status = status
        self.detail = detail
        self.fix = fix
        self.protections = protections
    }
}

extension Engine {
    static let minimumFreeBytes: Int64 = 2 << 30
    static let installFix = "sudo scripts/install-deps.sh"

    /// Checks every prerequisite; re-probes the accelerator by really booting under KVM.
    public func doctor() async -> [DoctorCheck] {
        var checks: [DoctorCheck] = []
        let backendOK = (try? backend.version()) != nil
        for check in backend.hostChecks() {
            checks.append(DoctorCheck(
                name: check.name, status: check.ok ? .ok : (check.warningOnly ? .warning : .error), detail: check.detail,
                fix: check.fix.map { $0 == "scripts/install-deps.sh" ? Self.installFix : $0 }))
        }
        for (tool, package) in [("mke2fs", "e2fsprogs"), ("debugfs", "e2fsprogs"), ("e2fsck", "e2fsprogs"), ("busybox", "busybox-static"), ("cpio", "cpio")] {
            if let path = ExternalCommand.locate(tool) {
                checks.append(DoctorCheck(name: tool, status: .ok, detail: path.path))
            } else {
                checks.append(DoctorCheck(name: tool, status: .error, detail: "\(tool) not found", fix: "apt-get install -y \(package)"))
            }
        }
        var kernelOK = false
        do {
            let kernel = try GuestKernel.locate(home: home)
            checks.append(DoctorCheck(name: "kernel", status: .ok, detail: "\(kernel.release) at \(kernel.directory.path)"))
            kernelOK = true
        } catch {
            checks.append(DoctorCheck(name: "kernel", status: .error, detail: "\(error)", fix: Self.installFix))
        }
        do {
            checks.append(DoctorCheck(name: "agent", status: .ok, detail: try AgentBinary.locate().path))
        } catch {
            checks.append(DoctorCheck(name: "agent", status: .error, detail: "\(error)", fix: "swift build -c release --static-swift-stdlib"))
        }
        if backendOK && kernelOK {
            do {
                let choice = try await accelerator(refresh: true)
                checks.append(DoctorCheck(
                    name: "accelerator", status: choice.accelerator == .kvm ? .ok : .warning,
                    detail: "\(choice.accelerator.rawValue.uppercased()): \(choice.reason)",
                    fix: choice.accelerator == .kvm ? nil : "guests run under TCG (slower); on a host with working KVM clade uses it automatically"))
            } catch {
                checks.append(DoctorCheck(name: "accelerator", status: .error, detail: "probe failed: \(error)", fix: Self.installFix))
            }
        } else {
            checks.append(DoctorCheck(name: "accelerator", status: .error, detail: "not probed: the \(backend.name) backend and a guest kernel are needed first", fix: Self.installFix))
        }
        do {
            try home.prepare()
            let probe = home.temporary.appendingPathComponent(".doctor-\(getpid())")
            try FileSystem.writeAtomically(Data("ok".utf8), to: probe)
            try FileSystem.remove(probe)
            checks.append(DoctorCheck(name: "store", status: .ok, detail: "\(home.root.path) is writable"))
            let type = try FileSystem.filesystemType(at: home.root)
            let reflink = FileSystem.supportsReflink(in: home.temporary)
            checks.append(DoctorCheck(
                name: "filesystem", status: .ok,
                detail: "\(type), reflink \(reflink ? "supported" : "not supported (copies fall back to sparse copy)")"))
            let free = try FileSystem.freeBytes(at: home.root)
            let enough = free >= Self.minimumFreeBytes
            checks.append(DoctorCheck(
                name: "disk space", status: enough ? .ok : .warning,
                detail: String(format: "%.1f GiB free", Double(free) / Double(1 << 30)),
                fix: enough ? nil : "free space on \(home.root.path) or choose another --home"))
        } catch {
            checks.append(DoctorCheck(name: "store", status: .error, detail: "\(error)", fix: "choose a writable directory with --home DIR or CLADE_HOME"))
        }
        checks.append(catalogCheck())
        checks.append(confinementCheck())
        checks.append(await weakerIsolationCheck())
        checks.append(lazyForkCheck())
        return checks
    }

    /// The SQLite catalog opens, is in WAL mode and passes SQLite's quick check; reports what it
    /// holds and operations a dead clade left in the journal (the next `clade ls` rolls them back).
    func catalogCheck() -> DoctorCheck {
        let path = CatalogDatabase.url(in: home).path
        do {
            let database = try CatalogDatabase.shared(home)
            let health = try database.health()
            let abandoned = try journal.abandoned()
            let detail = "\(path): \(health.journalMode), \(health.snapshots) snapshots, \(health.sandboxes) sandboxes"
            guard health.integrity == "ok" else {
                return DoctorCheck(name: "catalog", status: .error, detail: "\(detail); quick_check: \(health.integrity)",
                                   fix: "stop clade, move \(path) aside; it is rebuilt from the store's directories")
            }
            if !abandoned.isEmpty {
                return DoctorCheck(
                    name: "catalog", status: .warning,
                    detail: "\(detail); \(abandoned.count) interrupted operation(s): \(abandoned.map { "\($0.kind) \($0.subject)" }.joined(separator: ", "))",
                    fix: "clade ls (rolls them back)")
            }
            return DoctorCheck(name: "catalog", status: health.journalMode == "wal" ? .ok : .warning, detail: detail)
        } catch {
            return DoctorCheck(name: "catalog", status: .error, detail: "\(error)", fix: "stop clade, move \(path) aside; it is rebuilt from the store's directories")
        }
    }
}
