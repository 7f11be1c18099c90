import CladeEngine
import CladeGuestProtocol
import CladeModel
import CladeVMM
import Foundation

/// A pod's VM on the pod's own network: under the CRI, the namespace CNI made, named in the
/// sandbox container's `config.json`. The guest takes the pod's address, gateway, hostname and
/// resolver; its traffic crosses that namespace, so the cluster's network and policy see the
/// pod's address; clade's policy (`clade.dev/network`, else the snapshot's) filters it there too.
extension ShimPod {
    /// What a pod's VM is attached with, kept for its lifetime.
    struct PodAttachment {
        let network: PodNetwork
        let relay: AgentRelay
        let tap: Int32
    }

    /// The policy the `clade.dev/network` annotation names, if any.
    func podPolicy(_ spec: RuntimeSpec) throws -> NetworkPolicy? {
        guard let text = spec.annotations?[Annotations.network] else { return nil }
        do {
            return try NetworkPolicy(parsing: text)
        } catch {
            throw TTRPCError.status(.invalidArgument, "the \(Annotations.network) annotation '\(text)' is not a network policy: \(error)")
        }
    }

    /// The policy a fork of `tag` keeps when the pod names none: the snapshot's own.
    func snapshotPolicy(_ tag: String) async -> NetworkPolicy {
        (try? await engine.snapshots.info(tag).metadata.network) ?? .standard
    }

    /// Takes over the pod's network namespace when the spec names one; nil on `ctr`, where the
    /// guest keeps clade's own user-mode network.
    func attachPodNetwork(_ spec: RuntimeSpec, policy: NetworkPolicy) throws -> PodAttachment? {
        guard let path = spec.networkNamespacePath else { return nil }
        let network: PodNetwork
        do {
            network = try PodNetwork.inspect(namespace: path)
        } catch {
            throw ShimErrors.translate(error, doing: "read the pod's network namespace \(path)")
        }
        let relay = try AgentRelay(namespacePath: path, logger: logger)
        do {
            let tap = try network.attach(policy: policy)
            return PodAttachment(network: network, relay: relay, tap: tap)
        } catch {
            relay.stop()
            throw ShimErrors.translate(error, doing: "attach the VM to the pod's network namespace \(path)")
        }
    }

    /// Moves the new VM's guest onto the pod's network and keeps the attachment for the pod's
    /// lifetime; a guest that cannot be moved is ended, so no VM runs off its pod's network.
    func adopt(_ attachment: PodAttachment?, for sandbox: String, spec: RuntimeSpec) async throws {
        guard let attachment else { return }
        do {
            try await configureGuest(sandbox, attachment: attachment, spec: spec)
        } catch {
            try? await engine.sandboxes.kill(id: sandbox)
            attachment.relay.stop()
            throw error
        }
        podAttachment = attachment
    }

    /// Gives the guest the pod's address and route, its hostname and its resolver.
    func configureGuest(_ sandbox: String, attachment: PodAttachment, spec: RuntimeSpec) async throws {
        var commands = [attachment.network.guestCommand]
        if let hostname = spec.hostname, !hostname.isEmpty {
            guard hostname.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." }), hostname.count <= 253 else {
                throw TTRPCError.status(.invalidArgument, "the pod's hostname '\(hostname)' is not a host name")
            }
            commands.append("$B hostname \(hostname) && echo \(hostname) > /etc/hostname")
        }
        if let resolver = spec.mountSource(for: "/etc/resolv.conf"), let text = try? String(contentsOfFile: resolver, encoding: .utf8) {
            let encoded = Data(text.utf8).base64EncodedString()
            commands.append("echo \(encoded) | $B base64 -d > /etc/resolv.conf")
        }
        let script = commands.joined(separator: " && ")
        let result: AgentResponse
        do {
            result = try await engine.sandboxes.exec(id: sandbox, argv: ["/.clade/bin/busybox", "sh", "-c", "B=/.clade/bin/busybox; " + script], user: "root", timeout: 30)
        } catch {
            throw ShimErrors.translate(error, doing: "give the pod's VM its network")
        }
        guard result.exitCode == 0 else {
            let reason = (result.stderr ?? result.error ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            throw TTRPCError.status(.internalError, "the pod's VM refused its network settings (exit \(result.exitCode.map(String.init) ?? "none")): \(reason)")
        }
        logger.info("pod VM on the pod's network", metadata: ["sandbox": "\(sandbox)", "address": "\(attachment.network.address)", "gateway": "\(attachment.network.gateway ?? "none")"])
    }
}
