import CladeEngine
import CladeModel
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// E2B snapshots over clade's: `create_snapshot` is a named branch (live where the backend can), `list_snapshots` lists
/// them, `delete_snapshot` (E2B's `DELETE /templates/{id}`) removes one; each `fork` leaves a
/// snapshot of its own behind, collected once nothing depends on it.
extension E2BService {
    /// A named branch of the sandbox: a template `Sandbox.create` can start from.
    func snapshot(_ id: String, name: String?) async throws -> Response {
        let (record, _) = try await require(id)
        guard record.state == .running else { throw E2BError(409, "sandbox \(id) is paused; connect to it before taking a snapshot") }
        let tag = name ?? "snapshot-\(Names.newSandboxID())"
        do { try Names.validate(tag, kind: "snapshot") } catch { throw E2BError(400, "\(error)") }
        if try await engine.snapshots.list().contains(where: { $0.tag == tag }) {
            throw E2BError(409, "a snapshot named '\(tag)' exists; choose another name or remove it with `clade rmi \(tag)`")
        }
        let (_, report) = try await engine.branches.branch(id: id, tag: tag, mode: .auto)
        return Self.withBranchMode(Self.json(["snapshotID": tag, "names": [tag]], status: .created), report)
    }

    func listSnapshots(_ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        var snapshots = try await engine.snapshots.list().filter { !$0.tag.hasPrefix(Self.forkSnapshotPrefix) }
        if let name = query.get("name") { snapshots = snapshots.filter { $0.tag == String(name) } }
        if let sandbox = query.get("sandboxID") { snapshots = snapshots.filter { $0.branchedFrom == String(sandbox) } }
        return Self.json(snapshots.map { ["snapshotID": $0.tag, "names": [$0.tag]] as [String: Any] })
    }

    /// Removes fork snapshots no sandbox depends on any more (each E2B fork leaves one behind).
    func collectForkSnapshots() async {
        guard let snapshots = try? await engine.snapshots.list() else { return }
        for snapshot in snapshots where snapshot.tag.hasPrefix(Self.forkSnapshotPrefix) {
            if let info = try? await engine.snapshots.info(snapshot.tag), info.dependentSandboxes.isEmpty, info.childSnapshots.isEmpty {
                _ = try? await engine.snapshots.remove(snapshot.tag)
            }
        }
    }

    /// Removes the snapshot `tag`. Sandboxes started from it keep running: each holds its own
    /// names for the snapshot's files. A snapshot other snapshots were branched from stays.
    func deleteSnapshot(_ tag: String) async throws -> Response {
        guard try await engine.snapshots.list().contains(where: { $0.tag == tag }) else {
            throw E2BError(404, "template or snapshot '\(tag)' not found")
        }
        let info = try await engine.snapshots.info(tag)
        guard info.childSnapshots.isEmpty else {
            throw E2BError(409, "snapshot '\(tag)' has snapshots branched from it (\(info.childSnapshots.joined(separator: ", "))); delete those first")
        }
        _ = try await engine.snapshots.remove(tag, force: true)
        return Response(status: .noContent)
    }
}
