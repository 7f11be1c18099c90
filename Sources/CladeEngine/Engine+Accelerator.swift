import CladeGuest
import CladeModel
import CladeStore
import CladeVMM
import Foundation

extension Engine {
    private var acceleratorCache: URL { home.state.appendingPathComponent("accelerator.json") }

    /// The accelerator to boot with. The probe result is cached per backend version; `refresh` re-probes.
    public func accelerator(refresh: Bool = false) async throws -> AcceleratorChoice {
        let version = try backend.version()
        if let forced = ProcessInfo.processInfo.environment["CLADE_ACCEL"], let accelerator = Accelerator(rawValue: forced) {
            return AcceleratorChoice(accelerator: accelerator, reason: "forced by CLADE_ACCEL=\(forced)", backendVersion: version)
        }
        if !refresh, let cached = try? JSONFiles.read(AcceleratorChoice.self, from: acceleratorCache), cached.backendVersion == version {
            return cached
        }
        let kernel = try GuestKernel.locate(home: home)
        let work = try home.makeTemporaryDirectory(prefix: "probe")
        defer { try? FileSystem.remove(work) }
        let initrd = try ProbeInitrd.build(in: work)
        let choice = try await backend.probeAccelerator(kernel: kernel.image, initrd: initrd, workDirectory: work)
        try home.prepare()
        try JSONFiles.write(choice, to: acceleratorCache)
        logger.info("accelerator chosen", metadata: ["accelerator": "\(choice.accelerator.rawValue)", "reason": "\(choice.reason)"])
        return choice
    }
}
