/// The accelerator chosen for this host and why.
public struct AcceleratorChoice: Codable, Sendable, Equatable {
    /// What the probe guest's init prints once it runs; only a guest that prints it proves the
    /// accelerator boots real kernels.
    public static let probeMarker = "CLADE-PROBE-OK"

    public var accelerator: Accelerator
    /// Why this accelerator was chosen, in particular why KVM was rejected.
    public var reason: String
    /// The version of the backend the choice was made with (a new version is probed again).
    public var backendVersion: String
    /// Seconds the probe boot took, when it ran.
    public var probeSeconds: Double?

    public init(accelerator: Accelerator, reason: String, backendVersion: String, probeSeconds: Double? = nil) {
        self.accelerator = accelerator
        self.reason = reason
        self.backendVersion = backendVersion
        self.probeSeconds = probeSeconds
    }

    enum CodingKeys: String, CodingKey {
        case accelerator, reason
        case backendVersion = "backend_version"
        case probeSeconds = "probe_seconds"
    }

    /// The name 0.6.0 wrote the version under (its only backend was QEMU); read, never written.
    private enum LegacyKeys: String, CodingKey {
        case version = "qemu_version"
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        accelerator = try container.decode(Accelerator.self, forKey: .accelerator)
        reason = try container.decode(String.self, forKey: .reason)
        backendVersion = try container.decodeIfPresent(String.self, forKey: .backendVersion)
            ?? decoder.container(keyedBy: LegacyKeys.self).decode(String.self, forKey: .version)
        probeSeconds = try container.decodeIfPresent(Double.self, forKey: .probeSeconds)
    }
}
