import Foundation
import Logging
import SwiftProtobuf

/// Forwards task events to containerd's event service (`$TTRPC_ADDRESS`), one at a time and in
/// order, so that containerd never sees a task's delete before its exit.
public actor ShimEvents {
    private let address: String?
    private let namespace: String
    private let logger: Logger
    private var client: TTRPCClient?

    /// `address` is containerd's ttrpc socket; nil sends nothing (the shim's own tests).
    public init(address: String?, namespace: String, logger: Logger) {
        self.address = address.map { $0.hasPrefix("unix://") ? String($0.dropFirst("unix://".count)) : $0 }
        self.namespace = namespace
        self.logger = logger
    }

    /// Sends `event` under `topic` (`/tasks/exit`, …). A failure is logged, not thrown: the task
    /// itself has changed state whatever containerd heard of it.
    public func publish(_ topic: String, _ event: some SwiftProtobuf.Message) async {
        guard let address else { return }
        var envelope = Containerd_Services_Events_Ttrpc_V1_Envelope()
        envelope.timestamp = Google_Protobuf_Timestamp(date: Date())
        envelope.namespace = namespace
        envelope.topic = topic
        do {
            envelope.event = try Google_Protobuf_Any(bare: event)
            var request = Containerd_Services_Events_Ttrpc_V1_ForwardRequest()
            request.envelope = envelope
            for attempt in 1...2 {
                do {
                    let connection = try await connected(address)
                    let _: Google_Protobuf_Empty = try await connection.call(
                        "containerd.services.events.ttrpc.v1.Events", "Forward", request, metadata: ["containerd-namespace-ttrpc": namespace])
                    return
                } catch {
                    await client?.close()
                    client = nil
                    if attempt == 2 { throw error }
                }
            }
        } catch {
            logger.warning("containerd did not take a task event", metadata: ["topic": "\(topic)", "error": "\(error)"])
        }
    }

    private func connected(_ address: String) async throws -> TTRPCClient {
        if let client { return client }
        let made = try await TTRPCClient.connect(path: address)
        client = made
        return made
    }

    public func close() async {
        await client?.close()
        client = nil
    }
}
