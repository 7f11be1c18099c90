/// The one version of clade: the CLI, the daemon and the guest agent are released together.
/// It lives here because this is the lowest module both the host and the agent link.
public enum CladeVersion {
    public static let current = "0.10.0"
}
