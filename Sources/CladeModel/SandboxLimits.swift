import Foundation

/// What one sandbox may take of the host, enforced on its VMM process through control groups.
public struct SandboxLimits: Codable, Sendable, Equatable {
    /// Host CPU time, in cores (0.5 = half of one core); nil: as many as its vCPUs can use.
    public var cpuCores: Double?
    /// Host memory for the whole VMM (guest RAM plus QEMU's own), MiB. Past it the VMM is killed.
    public var memoryMiB: Int
    /// Processes and threads the VMM may have.
    public var processes: Int

    public init(cpuCores: Double? = nil, memoryMiB: Int, processes: Int = SandboxLimits.defaultProcesses) {
        self.cpuCores = cpuCores
        self.memoryMiB = memoryMiB
        self.processes = processes
    }

    /// QEMU's own footprint beyond guest RAM under TCG: a 32 MiB translation cache, its heap,
    /// libraries and I/O buffers (~51 MiB measured per idle fork), with headroom for bursts.
    public static let vmmOverheadMiB = 160
    /// vCPU threads, QEMU's I/O worker pool (up to 64), the migration helper, with headroom.
    public static let defaultProcesses = 256

    /// The limits a sandbox with `guestMemoryMiB` of RAM gets unless asked otherwise.
    public static func defaults(guestMemoryMiB: Int) -> SandboxLimits {
        SandboxLimits(memoryMiB: guestMemoryMiB + vmmOverheadMiB)
    }

    /// Checks the values against the guest they bound; the message names the option to fix.
    public func validate(guestMemoryMiB: Int) throws {
        if let cpuCores, !(0.01...1024).contains(cpuCores) {
            throw ModelError.invalidLimit("--cpu-quota must be between 0.01 and 1024 cores (got \(cpuCores))")
        }
        guard memoryMiB >= guestMemoryMiB + 32 else {
            throw ModelError.invalidLimit("--host-memory must leave QEMU at least 32 MiB beyond the guest's \(guestMemoryMiB) MiB (got \(memoryMiB) MiB)")
        }
        guard (16...65536).contains(processes) else {
            throw ModelError.invalidLimit("--pids-limit must be between 16 and 65536 (got \(processes))")
        }
    }

    enum CodingKeys: String, CodingKey {
        case cpuCores = "cpu_cores"
        case memoryMiB = "memory_mib"
        case processes
    }
}

/// Limit overrides a request asks for; unset fields keep the defaults.
public struct LimitRequest: Codable, Sendable, Equatable {
    public var cpuCores: Double?
    public var memoryMiB: Int?
    public var processes: Int?

    public init(cpuCores: Double? = nil, memoryMiB: Int? = nil, processes: Int? = nil) {
        self.cpuCores = cpuCores
        self.memoryMiB = memoryMiB
        self.processes = processes
    }

    /// The limits for a guest of `guestMemoryMiB`, validated.
    public func resolve(guestMemoryMiB: Int) throws -> SandboxLimits {
        var limits = SandboxLimits.defaults(guestMemoryMiB: guestMemoryMiB)
        limits.cpuCores = cpuCores
        if let memoryMiB { limits.memoryMiB = memoryMiB }
        if let processes { limits.processes = processes }
        try limits.validate(guestMemoryMiB: guestMemoryMiB)
        return limits
    }

    enum CodingKeys: String, CodingKey {
        case cpuCores = "cpu_cores"
        case memoryMiB = "memory_mib"
        case processes
    }
}
