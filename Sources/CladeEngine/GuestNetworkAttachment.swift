/// A network its caller made for one guest instead of user-mode networking: a Kubernetes pod's
/// namespace (`PodNetwork`). The caller keeps what it made alive as long as the sandbox, and
/// relays the agent, which is then reachable only from inside that network.
public struct GuestNetworkAttachment: Sendable {
    /// The tap the guest's NIC uses, open in this process until the sandbox has started.
    public var tapDescriptor: Int32
    /// The loopback port where the caller relays connections to the guest agent.
    public var agentPort: Int

    public init(tapDescriptor: Int32, agentPort: Int) {
        self.tapDescriptor = tapDescriptor
        self.agentPort = agentPort
    }
}
