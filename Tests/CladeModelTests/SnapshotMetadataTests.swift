import CladeStore
import Foundation
import Testing

@testable import CladeModel

@Suite struct SnapshotMetadataTests {
    static let digest = "sha256:" + String(repeating: "a", count: 64)

    func json(formatVersion: String = "1.0", extra: String = "") -> Data {
        Data("""
        {
          "format_version": "\(formatVersion)",
          "tag": "py", "id": "0f", "created_at": "2026-11-22T10:00:00Z",
          "hypervisor": {"name": "qemu", "version": "7.2.22"},
          "machine": {"type": "microvm", "vcpus": 1, "memory_mib": 256, "devices": ["virtio-blk-device"],
                      "kernel_command_line": "console=ttyS0", "accelerator": "tcg"},
          "kernel": "\(Self.digest)", "initrd": "\(Self.digest)", "rootfs": "\(Self.digest)",
          "memory": {"file": "memory", "logical_size": 268435456, "physical_size": 1000},
          "device_state": {"file": "devices.state", "size": 70000, "sha256": "\(Self.digest)"}\(extra)
        }
        """.utf8)
    }

    @Test func decodesV1AndDefaultsMissingOptionalFields() throws {
        let metadata = try JSONFiles.decoder().decode(SnapshotMetadata.self, from: json())
        #expect(metadata.tag == "py")
        #expect(metadata.parent == nil)
        #expect(metadata.diskLayers.isEmpty)
        #expect(metadata.agentProtocolVersion == 1)
        #expect(metadata.image == nil)
    }

    @Test func ignoresUnknownFieldsAndAcceptsNewerMinorVersions() throws {
        let metadata = try JSONFiles.decoder().decode(
            SnapshotMetadata.self, from: json(formatVersion: "1.7", extra: #", "future": {"x": [1, 2]}, "parent": {"tag": "base", "id": "1"}"#))
        #expect(metadata.parent == .init(tag: "base", id: "1"))
        #expect(metadata.formatVersion == "1.7")
    }

    @Test func refusesANewerMajorVersionClearly() {
        #expect {
            try JSONFiles.decoder().decode(SnapshotMetadata.self, from: json(formatVersion: "2.0"))
        } throws: { error in
            "\(error)".contains("upgrade clade")
        }
    }

    @Test func roundTrips() throws {
        let metadata = try JSONFiles.decoder().decode(SnapshotMetadata.self, from: json())
        let again = try JSONFiles.decoder().decode(SnapshotMetadata.self, from: JSONFiles.encoder().encode(metadata))
        #expect(again == metadata)
    }

    @Test func namesRefusePathsAndOddCharacters() {
        for bad in ["", "../x", "a/b", ".hidden", "a..b", String(repeating: "x", count: 65), "sp ace"] {
            #expect(throws: StoreError.self, "\(bad)") { try Names.validate(bad, kind: "tag") }
        }
        for good in ["py", "python-3.12", "A_1"] {
            #expect(throws: Never.self) { try Names.validate(good, kind: "tag") }
        }
        #expect(throws: StoreError.self) { try Names.validateSandboxID("../../etc") }
    }
}
