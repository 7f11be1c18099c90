import Foundation
import Testing

@testable import CladeQEMU
import CladeVMM

@Suite struct QMPCodecTests {
    @Test func decodesGreeting() throws {
        let line = #"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}"#
        #expect(try QMPCodec.decode(Data(line.utf8)) == .greeting(version: "7.2.22"))
    }

    @Test func decodesReturnWithID() throws {
        let line = #"{"return": {"status": "running", "running": true}, "id": "clade-3"}"#
        guard case .success(let id, let value) = try QMPCodec.decode(Data(line.utf8)) else {
            Issue.record("expected success")
            return
        }
        #expect(id == "clade-3")
        #expect(value["status"]?.stringValue == "running")
        #expect(value["running"]?.boolValue == true)
    }

    @Test func decodesErrorCarryingQEMUsMessage() throws {
        let line = #"{"id": "clade-1", "error": {"class": "CommandNotFound", "desc": "The command foo has not been found"}}"#
        #expect(try QMPCodec.decode(Data(line.utf8))
            == .failure(id: "clade-1", errorClass: "CommandNotFound", description: "The command foo has not been found"))
    }

    @Test func decodesEventWithTimestamp() throws {
        let line = #"{"timestamp": {"seconds": 1700000000, "microseconds": 500000}, "event": "STOP"}"#
        guard case .event(let name, let data, let timestamp) = try QMPCodec.decode(Data(line.utf8)) else {
            Issue.record("expected event")
            return
        }
        #expect(name == "STOP")
        #expect(data == .null)
        #expect(timestamp == 1_700_000_000.5)
    }

    @Test func refusesNonJSONAndUnknownShapes() {
        #expect(throws: ChannelError.self) { try QMPCodec.decode(Data("not json".utf8)) }
        #expect(throws: ChannelError.self) { try QMPCodec.decode(Data(#"{"something": 1}"#.utf8)) }
    }

    @Test func encodesCommandsAsOneLine() throws {
        let data = try QMPCodec.encodeCommand("migrate", arguments: ["uri": .string("exec:cat > f")], id: "clade-9")
        let text = String(decoding: data, as: UTF8.self)
        #expect(text == #"{"arguments":{"uri":"exec:cat > f"},"execute":"migrate","id":"clade-9"}"# + "\n")
    }

    /// A machine in `/store/sandboxes/abc` with agent port 40000, for the command-line tests.
    static func sampleSpec() -> MachineSpec {
        let directory = URL(fileURLWithPath: "/store/sandboxes/abc")
        return MachineSpec(
            name: "clade-abc", memoryMiB: 256, cpus: 2, accelerator: .tcg,
            kernel: URL(fileURLWithPath: "/k"), initrd: URL(fileURLWithPath: "/i"), kernelCommandLine: "console=ttyS0",
            rootDisk: directory.appendingPathComponent("disk.qcow2"), memoryFile: directory.appendingPathComponent("memory"),
            runtimeDirectory: directory, agentPort: 40000, mac: "52:54:00:00:00:01")
    }

    @Test func commandLineKeepsRAMInASharedFileAndAFixedDeviceOrder() {
        let spec = Self.sampleSpec()
        let arguments = QEMUCommandLine.arguments(for: spec)
        let joined = arguments.joined(separator: " ")
        #expect(joined.contains("memory-backend-file,id=ram,size=256M,mem-path=/store/sandboxes/abc/memory,share=on"))
        #expect(joined.contains("hostfwd=tcp:127.0.0.1:40000-:8888"))
        #expect(joined.contains("-accel tcg,tb-size=32 -cpu max"))
        let devices = zip(arguments, arguments.dropFirst()).filter { $0.0 == "-device" }.map { $0.1.split(separator: ",")[0] }
        #expect(devices == ["virtio-blk-device", "virtio-net-device", "virtio-serial-device", "virtserialport", "virtio-rng-device"])
        // QEMU runs detached but never daemonizes (its filter forbids spawning), so nothing forks.
        #expect(!arguments.contains("-daemonize"))
        var confined = spec
        confined.confinement = MachineConfinement(syscallFilter: true)
        #expect(QEMUCommandLine.arguments(for: confined).joined(separator: " ").contains("-sandbox on,obsolete=deny,resourcecontrol=deny,spawn=deny"))
        confined.confinement.userNamespace = true
        #expect(QEMUCommandLine.arguments(for: confined).joined(separator: " ").contains("hostfwd=tcp::40000-:8888"),
            "inside its own network namespace QEMU listens where slirp4netns delivers")
        // Runtime files keep the names earlier releases used, so their sandboxes are found after an upgrade.
        #expect(joined.contains("-qmp unix:/store/sandboxes/abc/qmp.sock,server=on,wait=off"))
        #expect(joined.contains("-pidfile /store/sandboxes/abc/qemu.pid"))
        #expect(joined.contains("path=/store/sandboxes/abc/agent.sock"))
        #expect(joined.contains("-serial file:/store/sandboxes/abc/console.log"))
    }

    @Test func randomMACsAreLocalQEMUAddresses() {
        let mac = MachineSpec.randomMAC()
        #expect(mac.hasPrefix("52:54:00:"))
        #expect(mac.split(separator: ":").count == 6)
    }
}
