#if canImport(Glibc)
import Glibc
#endif
import CladeEngine
import CladeStore
import Foundation
import Logging

/// The long-lived shim: serves the Task service on the socket `start` handed it as fd 3.
public enum ShimServer {
    /// The descriptor `start` leaves the listening socket on.
    public static let listenerDescriptor: CInt = 3

    /// Serves until containerd's Shutdown once the pod is empty; never returns otherwise.
    public static func serve(_ arguments: ShimArguments, engine: Engine, logger: Logger) async throws -> Never {
        let events = ShimEvents(address: ProcessInfo.processInfo.environment["TTRPC_ADDRESS"], namespace: arguments.namespace, logger: logger)
        let pod = ShimPod(engine: engine, events: events, logger: logger)
        var router = ShimTaskService.router(pod: pod)
        let socket = ShimLauncher.socketPath(address: arguments.address, namespace: arguments.namespace, group: ShimLauncher.group(of: arguments.bundle.isEmpty ? nil : try? RuntimeSpec.load(bundle: arguments.bundle), id: arguments.id))
        router.afterAnswer = { method in
            if method == "Kill" { await pod.killAnswered() }
            guard method == "Shutdown", await pod.shuttingDown else { return }
            logger.info("shim exiting: the pod is empty")
            await events.close()
            unlink(socket)
            exit(0)
        }
        _ = try await TTRPCServer.adopting(listener: listenerDescriptor, router: router, logger: logger)
        logger.info("shim serving", metadata: ["id": "\(arguments.id)", "namespace": "\(arguments.namespace)", "pid": "\(getpid())"])
        // The event loop serves; this task only keeps the process alive.
        let (never, _) = AsyncStream.makeStream(of: Void.self)
        for await _ in never {}
        exit(0)
    }

    /// The `delete` action: cleans up after a shim that died. Ends the VM the bundle's marker
    /// names, unmounts the bundle's rootfs, and returns containerd's `DeleteResponse`.
    public static func cleanUp(bundle: String, engine: Engine, logger: Logger) async -> Data {
        let bundleURL = URL(fileURLWithPath: bundle)
        let marker = bundleURL.appendingPathComponent(ShimPod.sandboxMarker)
        if let data = try? Data(contentsOf: marker), let id = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines), !id.isEmpty {
            do {
                try await engine.sandboxes.kill(id: id)
                logger.info("ended the VM a dead shim left", metadata: ["sandbox": "\(id)"])
            } catch {
                logger.debug("no VM left to end", metadata: ["sandbox": "\(id)", "error": "\(error)"])
            }
            try? FileManager.default.removeItem(at: marker)
        }
        ShimPod.unmount(bundleURL.appendingPathComponent("rootfs"))
        var response = Containerd_Task_V2_DeleteResponse()
        // 128 + SIGKILL: the task was killed with its shim.
        response.exitStatus = 137
        response.exitedAt = Date().protobufTimestamp
        return (try? response.serializedData()) ?? Data()
    }
}
