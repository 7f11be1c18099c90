import CladeModel
import CladeStore
import CladeVMM
import Foundation
import Logging

/// One capability of the engine (images, sandboxes, snapshots, forks, branches, standby,
/// recovery, packs): a small type with a small public surface that shares the engine's store,
/// backend and the helpers every capability needs.
protocol EngineCapability: Sendable {
    var engine: Engine { get }
}

extension EngineCapability {
    var home: CladeHome { engine.home }
    var backend: any VMBackend { engine.backend }
    var logger: Logger { engine.logger }
    var blobs: BlobStore { engine.blobs }
    var sandboxCatalog: SandboxCatalog { engine.sandboxCatalog }
    var imageCatalog: ImageCatalog { engine.imageCatalog }
    var snapshotCatalog: SnapshotCatalog { engine.snapshotCatalog }
    var journal: OperationJournal { engine.journal }
    var disks: any DiskChain { engine.disks }

    func machine(_ id: String, pid: Int32?) -> any VMHandle { engine.machine(id, pid: pid) }
    func isAlive(_ id: String, pid: Int32?) -> Bool { engine.isAlive(id, pid: pid) }
    func runningRecord(_ id: String) throws -> SandboxRecord { try engine.runningRecord(id) }
    func destroy(id: String, pid: Int32?) async { await engine.destroy(id: id, pid: pid) }
    func consoleTail(_ id: String, lines: Int = 12) -> String { engine.consoleTail(id, lines: lines) }
    func beginOperation(_ kind: OperationKind, subject: String, paths: [URL] = []) throws -> OperationJournal.Entry {
        try engine.beginOperation(kind, subject: subject, paths: paths)
    }
    func confine(_ record: inout SandboxRecord, policy: NetworkPolicy, limits: LimitRequest? = nil, checked: Engine.IsolationCheck? = nil) throws -> MachineConfinement {
        try engine.confine(&record, policy: policy, limits: limits, checked: checked)
    }
    func releaseConfinement(_ confinement: SandboxConfinement?, sandbox id: String) { engine.releaseConfinement(confinement, sandbox: id) }
    func reapplyConfinement(_ record: SandboxRecord) { engine.reapplyConfinement(record) }
    func setupInProgress(_ id: String) -> Bool { engine.setupInProgress(id) }
    func recordedPid(_ id: String) -> Int32? { engine.recordedPid(id) }
    func accelerator() async throws -> AcceleratorChoice { try await engine.accelerator() }
    func markPause(_ paths: SandboxPaths) throws { try engine.markPause(paths) }
    func clearPauseMark(_ paths: SandboxPaths) { engine.clearPauseMark(paths) }
    func machineSpec(
        memoryMiB: Int, cpus: Int, accelerator: Accelerator, kernel: URL, initrd: URL, commandLine: String, paths: SandboxPaths, port: Int, mac: String
    ) -> MachineSpec {
        engine.machineSpec(memoryMiB: memoryMiB, cpus: cpus, accelerator: accelerator, kernel: kernel, initrd: initrd, commandLine: commandLine, paths: paths, port: port, mac: mac)
    }
    func launchWithAgentPort(_ fixedPort: Int?, spec makeSpec: (Int) throws -> MachineSpec) async throws -> (machine: any VMHandle, port: Int) {
        try await engine.launchWithAgentPort(fixedPort, spec: makeSpec)
    }
    func claimTag(_ tag: String, option: String = "--tag") throws -> FileLock { try engine.claimTag(tag, option: option) }
    func makeStagingDirectory(for tag: String) throws -> URL { try engine.makeStagingDirectory(for: tag) }
    func bootFiles(of record: SandboxRecord) throws -> BootFiles { try engine.bootFiles(of: record) }
    func publishStagedSnapshot(_ staging: URL, as tag: String) throws { try engine.publishStagedSnapshot(staging, as: tag) }
    func writeSnapshotMetadata(
        in staging: URL, tag: String, of record: SandboxRecord, boot: BootFiles, layerCount: Int,
        deviceStateFormat: String, parent: SnapshotMetadata.Parent?, branchedFrom: String? = nil
    ) throws -> SnapshotMetadata {
        try engine.writeSnapshotMetadata(
            in: staging, tag: tag, of: record, boot: boot, layerCount: layerCount, deviceStateFormat: deviceStateFormat, parent: parent,
            branchedFrom: branchedFrom)
    }
}
