#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import CladeVMM
import Foundation

/// Live branches through QEMU's `background-snapshot` migration, landed by clade.
///
/// The guest stops once: clade stops it, QEMU saves its device state into the stream and
/// write-protects all of RAM with userfaultfd, clade freezes the disk, and the guest runs on.
/// QEMU then sends every page once, as its copy reaches the page or just before the guest
/// writes it, so the stream is RAM as it was at the stop however much the guest writes after.
///
/// Why not precopy (`migrate` with dirty logging), which needs no userfaultfd: under TCG,
/// QEMU before 9.0 clears its migration dirty bits without resetting the vCPUs' TLB entries
/// that already skip dirty tracking (fixed upstream by commit 03bfc21, "physmem: Fix migration
/// dirty bitmap coherency with TCG memory access"), so writes to hot pages (the guest kernel's
/// timers) are lost; a check found 4 of 131,072 pages differing and forks failed to boot.
extension QEMUMachine {
    static let liveDescriptorName = "clade-live"
    /// How long QEMU may take to arm write protection (it first reads every page of RAM).
    static let armingTimeout: Double = 60

    public func copyMemoryLive(_ plan: LiveCopyPlan) async throws -> LiveCopyReport {
        // QEMU 7.2 reads every page of RAM before arming, while the guest is stopped: mapping
        // them now, with the guest running, keeps that out of the pause.
        let prefaultStart = Date()
        try DirtyPages.mapAllPages(pid: pid, memoryFile: plan.sourceMemoryFile)
        let prefault = Date().timeIntervalSince(prefaultStart) * 1000
        var report = try await QMPDescriptorSession.run(socket: files.qmpSocket) { session in try self.copyOnce(plan, session: session) }
        report.prefaultMilliseconds = prefault
        return report
    }

    private func copyOnce(_ plan: LiveCopyPlan, session: QMPDescriptorSession) throws -> LiveCopyReport {
        // QEMU writes the stream into a file beside the new memory file, not into a socket clade
        // reads: if clade dies mid-copy, QEMU 7.2 finishes on its own and lifts the write
        // protection. A broken stream would fail the migration thread while the main thread may
        // wait on a protected page that only that thread's cleanup would release: a stuck guest.
        let streamFile = plan.memoryFile.appendingPathExtension("stream")
        let stream = try FileSystem.open(streamFile, flags: O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode: 0o600)
        defer { unlink(streamFile.path) }
        do {
            defer { close(stream) }
            // A branch whose clade died mid-copy leaves QEMU finishing that copy on its own.
            try session.waitForAbandonedMigration()
            try session.execute("migrate-set-capabilities", arguments: Self.liveCapabilities(true))
            try session.execute("getfd", arguments: ["fdname": .string(Self.liveDescriptorName)], attaching: stream)
        }
        defer { _ = try? session.execute("migrate-set-capabilities", arguments: Self.liveCapabilities(false)) }
        try prepareWritable(plan.diskOverlay)

        try session.execute("stop")
        var diskMoved = false
        do {
            FaultPoint.branchLivePaused.crashIfRequested()
            // Stopped first, so QEMU keeps the guest stopped after arming (it resumes only a
            // guest it found running) and the disk below is frozen at the same instant.
            try session.execute("migrate", arguments: ["uri": .string("fd:\(Self.liveDescriptorName)")])
            try waitUntilArmed(session)
            try session.execute("blockdev-snapshot-sync", arguments: Self.freezeDiskArguments(onto: plan.diskOverlay))
            diskMoved = true
            plan.onDiskFrozen()
            try session.execute("cont")
        } catch {
            _ = try? session.execute("migrate_cancel")
            _ = try? session.execute("cont")
            throw diskMoved ? VMMError.stateTransferFailed(backend: backendName, reason: "live copy: \(error)") : error
        }
        FaultPoint.branchLiveCopying.crashIfRequested()
        do {
            try session.waitForMigration(timeout: 600)
        } catch {
            _ = try? session.execute("migrate_cancel")
            throw error
        }
        guard let stopped = session.eventTimes["STOP"], let resumed = session.eventTimes["RESUME"] else {
            throw VMMError.stateTransferFailed(backend: backendName, reason: "live copy: QEMU did not report when the guest stopped and ran again")
        }
        let totals = try land(streamFile, plan)
        return LiveCopyReport(pauseMilliseconds: (resumed - stopped) * 1000, pagesWritten: totals.pagesWritten, zeroPages: totals.zeroPages)
    }

    /// Applies the finished stream: RAM into the new memory file, device state into its own.
    private func land(_ streamFile: URL, _ plan: LiveCopyPlan) throws -> MigrationStreamReader.Totals {
        let input = try FileSystem.open(streamFile, flags: O_RDONLY | O_CLOEXEC)
        defer { close(input) }
        let output = try FileSystem.open(plan.memoryFile, flags: O_RDWR | O_CLOEXEC)
        defer { close(output) }
        guard ftruncate(output, 0) == 0, ftruncate(output, off_t(plan.memoryBytes)) == 0 else {
            throw StoreError.systemCall("ftruncate", path: plan.memoryFile.path, errno: errno)
        }
        let devices = try FileSystem.open(plan.deviceState, flags: O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode: 0o644)
        defer { close(devices) }
        let reader = MigrationStreamReader(block: "ram", blockBytes: UInt64(plan.memoryBytes), output: output, deviceState: devices, sparseOutput: true)
        return try reader.land(from: DescriptorByteSource(descriptor: input))
    }

    /// QEMU counts its first page sent once write protection is armed and it let go of the guest.
    private func waitUntilArmed(_ session: QMPDescriptorSession) throws {
        let deadline = Date().addingTimeInterval(Self.armingTimeout)
        while true {
            let info = try session.execute("query-migrate")
            let status = info["status"]?.stringValue ?? "none"
            if status == "failed" || status == "cancelled" {
                throw VMMError.stateTransferFailed(backend: backendName, reason: "live copy \(status): \(info["error-desc"]?.stringValue ?? "no reason given")")
            }
            let sent = (info["ram"]?["normal"]?.numberValue ?? 0) + (info["ram"]?["duplicate"]?.numberValue ?? 0)
            if sent > 0 || status == "completed" { return }
            guard Date() < deadline else {
                throw VMMError.stateTransferFailed(backend: backendName, reason: "live copy: QEMU did not arm write protection within \(Int(Self.armingTimeout)) s")
            }
            usleep(500)
        }
    }

    static func liveCapabilities(_ on: Bool) -> [String: JSONValue] {
        var list = [JSONValue.object(["capability": .string("background-snapshot"), "state": .bool(on)])]
        // Shared RAM is not skipped: a fork's RAM is private, and the stream's block list has no addresses.
        list.append(.object(["capability": .string("x-ignore-shared"), "state": .bool(false)]))
        return ["capabilities": .array(list)]
    }
}
