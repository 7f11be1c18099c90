import CladeVMM
import Foundation
import Testing

@testable import CladeQEMU

/// What a store written by clade 0.6.0 holds for QEMU is still understood.
@Suite struct UpgradeCompatibilityTests {
    /// A running sandbox's directory from before the seam: the QEMU backend finds its pid file
    /// under the same name, so a new clade can stop, adopt or kill it.
    @Test func aRuntimeDirectoryFromTheLastReleaseIsFound() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("clade-qemu-upgrade-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try Data("48211\n".utf8).write(to: directory.appendingPathComponent("qemu.pid"))
        try Data("[    0.000000] Linux version 6.1\nlast line\n".utf8).write(to: directory.appendingPathComponent("console.log"))
        let machine = QEMUDriver().attach(runtimeDirectory: directory, pid: nil)
        #expect(machine.pid == 48211)
        #expect(machine.consoleTail(lines: 1) == "last line")
    }

    /// The accelerator cache 0.6.0 wrote (`qemu_version`) is read, so an upgrade does not re-probe.
    @Test func theAcceleratorCacheOfTheLastReleaseLoads() throws {
        let old = #"{"accelerator":"tcg","probe_seconds":15.2,"qemu_version":"7.2.22","reason":"KVM rejected: ...; using TCG"}"#
        let choice = try JSONDecoder().decode(AcceleratorChoice.self, from: Data(old.utf8))
        #expect(choice.backendVersion == "7.2.22")
        #expect(choice.accelerator == .tcg)
        let written = String(decoding: try JSONEncoder().encode(choice), as: UTF8.self)
        #expect(written.contains("backend_version"))
    }
}
