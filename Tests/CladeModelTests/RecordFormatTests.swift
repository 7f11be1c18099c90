import CladeStore
import Foundation
import Testing

@testable import CladeModel

/// Records exactly as clade 0.6.0 wrote them (the release before the hypervisor seam) still load:
/// the "old metadata stays readable" invariant, for the files a store holds across an upgrade.
@Suite struct RecordFormatTests {
    static let digest = "sha256:" + String(repeating: "b", count: 64)

    @Test func aSandboxRecordFromTheLastReleaseLoads() throws {
        let json = """
        {
          "accelerator" : "tcg",
          "active_disk" : "disk-1.qcow2",
          "agent_port" : 41237,
          "cpus" : 1,
          "created_at" : "2026-11-29T21:14:03Z",
          "generation" : "5c1f0a4e-3d1b-4b8e-9a52-0c7d2f6e1a90",
          "id" : "3f9a2c4b5d6e",
          "image" : "default",
          "initrd" : "\(Self.digest)",
          "kernel" : "\(Self.digest)",
          "kernel_command_line" : "console=ttyS0 quiet panic=-1 init_on_free=1 clade.hostname=0a1b2c3d4e5f tsc_early_khz=2600000",
          "layer_count" : 1,
          "mac" : "52:54:00:1a:2b:3c",
          "memory_mib" : 256,
          "pid" : 48211,
          "rootfs" : "\(Self.digest)",
          "snapshot" : "base",
          "snapshot_id" : "8e0c4d8a-6a55-4f0f-b0b4-2b3f3f1d9c11",
          "state" : "running"
        }
        """
        let record = try JSONFiles.decoder().decode(SandboxRecord.self, from: Data(json.utf8))
        #expect(record.id == "3f9a2c4b5d6e")
        #expect(record.state == .running)
        #expect(record.pid == 48211)
        #expect(record.agentPort == 41237)
        #expect(record.activeDisk == "disk-1.qcow2")
        #expect(record.layerCount == 1)
        #expect(record.snapshot == "base")
        #expect(record.kernelCommandLine?.hasPrefix("console=ttyS0") == true)
        // Written back, it keeps every field a 0.6.0 reader needs.
        let again = try JSONSerialization.jsonObject(with: try JSONFiles.encoder().encode(record)) as? [String: Any]
        for key in ["id", "state", "pid", "agent_port", "mac", "memory_mib", "cpus", "accelerator", "snapshot", "active_disk", "layer_count"] {
            #expect(again?[key] != nil, "\(key) is no longer written")
        }
    }

    @Test func aBranchedSnapshotFromTheLastReleaseLoads() throws {
        let json = """
        {
          "agent_protocol_version" : 1,
          "branched_from" : "3f9a2c4b5d6e",
          "created_at" : "2026-11-29T21:20:41Z",
          "device_state" : { "file" : "devices.state", "format" : "devices", "sha256" : "\(Self.digest)", "size" : 4211 },
          "disk_layers" : [
            { "backing" : "\(Self.digest)", "file" : "layer-0.qcow2", "format" : "qcow2" },
            { "file" : "layer-1.qcow2", "format" : "qcow2" }
          ],
          "format_version" : "1.0",
          "hypervisor" : { "name" : "qemu", "version" : "7.2.22" },
          "id" : "0b7c1e52-2a2f-4f7d-8d0c-96d1f1f5e3aa",
          "image" : "default",
          "initrd" : "\(Self.digest)",
          "kernel" : "\(Self.digest)",
          "machine" : {
            "accelerator" : "tcg",
            "devices" : [ "virtio-blk-device", "virtio-net-device", "virtio-serial-device", "virtserialport", "virtio-rng-device" ],
            "kernel_command_line" : "console=ttyS0 quiet panic=-1",
            "memory_mib" : 256,
            "type" : "microvm",
            "vcpus" : 1
          },
          "memory" : { "file" : "memory", "logical_size" : 268435456, "physical_size" : 31457280 },
          "parent" : { "id" : "8e0c4d8a-6a55-4f0f-b0b4-2b3f3f1d9c11", "tag" : "base" },
          "rootfs" : "\(Self.digest)",
          "tag" : "b1"
        }
        """
        let metadata = try JSONFiles.decoder().decode(SnapshotMetadata.self, from: Data(json.utf8))
        #expect(metadata.hypervisor.name == "qemu")
        #expect(metadata.diskLayers.map(\.file) == ["layer-0.qcow2", "layer-1.qcow2"])
        #expect(metadata.deviceState.format == SnapshotMetadata.DeviceState.devicesFormat)
        #expect(metadata.parent?.tag == "base")
        #expect(metadata.branchedFrom == "3f9a2c4b5d6e")
        #expect(metadata.machine.devices.count == 5)
    }
}
