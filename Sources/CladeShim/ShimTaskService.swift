import CladeEngine
import CladeGuestProtocol
import CladeVMM
import Foundation
import SwiftProtobuf

/// containerd's `containerd.task.v2.Task` service on a ``ShimPod``. Methods it does not list
/// answer Unimplemented (the router's default).
public enum ShimTaskService {
    static let name = "containerd.task.v2.Task"

    public static func router(pod: ShimPod) -> TTRPCRouter {
        var router = TTRPCRouter()
        @Sendable func key(_ id: String, _ exec: String) -> ProcessKey { ProcessKey(container: id, exec: exec) }
        router.add(name, "Create") { (request: Containerd_Task_V2_CreateTaskRequest, _) in
            var response = Containerd_Task_V2_CreateTaskResponse()
            response.pid = try await pod.create(request)
            return response
        }
        router.add(name, "Start") { (request: Containerd_Task_V2_StartRequest, _) in
            var response = Containerd_Task_V2_StartResponse()
            response.pid = try await pod.start(key(request.id, request.execID))
            return response
        }
        router.add(name, "Wait") { (request: Containerd_Task_V2_WaitRequest, _) in
            let ended = try await pod.wait(key(request.id, request.execID))
            var response = Containerd_Task_V2_WaitResponse()
            response.exitStatus = ended.exitStatus
            response.exitedAt = (ended.exitedAt ?? Date()).protobufTimestamp
            return response
        }
        router.add(name, "State") { (request: Containerd_Task_V2_StateRequest, _) in
            try await pod.state(key(request.id, request.execID))
        }
        router.add(name, "Kill") { (request: Containerd_Task_V2_KillRequest, _) in
            try await pod.kill(key(request.id, request.execID), signal: request.signal, all: request.all)
            return Google_Protobuf_Empty()
        }
        router.add(name, "Delete") { (request: Containerd_Task_V2_DeleteRequest, _) in
            let removed = try await pod.delete(key(request.id, request.execID))
            var response = Containerd_Task_V2_DeleteResponse()
            response.pid = UInt32(await pod.vmmPid)
            response.exitStatus = removed.exitStatus
            response.exitedAt = (removed.exitedAt ?? Date()).protobufTimestamp
            return response
        }
        router.add(name, "Exec") { (request: Containerd_Task_V2_ExecProcessRequest, _) in
            try await pod.exec(request)
            return Google_Protobuf_Empty()
        }
        router.add(name, "ResizePty") { (request: Containerd_Task_V2_ResizePtyRequest, _) in
            try await pod.resize(key(request.id, request.execID), width: request.width, height: request.height)
            return Google_Protobuf_Empty()
        }
        router.add(name, "CloseIO") { (request: Containerd_Task_V2_CloseIORequest, _) in
            if request.stdin { try await pod.closeIO(key(request.id, request.execID)) }
            return Google_Protobuf_Empty()
        }
        router.add(name, "Pids") { (request: Containerd_Task_V2_PidsRequest, _) in
            var response = Containerd_Task_V2_PidsResponse()
            response.processes = try await pod.pids(request.id)
            return response
        }
        router.add(name, "Pause") { (request: Containerd_Task_V2_PauseRequest, _) in
            try await pod.pause(request.id)
            return Google_Protobuf_Empty()
        }
        router.add(name, "Resume") { (request: Containerd_Task_V2_ResumeRequest, _) in
            try await pod.resume(request.id)
            return Google_Protobuf_Empty()
        }
        router.add(name, "Checkpoint") { (request: Containerd_Task_V2_CheckpointTaskRequest, _) in
            _ = try await pod.checkpoint(request)
            return Google_Protobuf_Empty()
        }
        router.add(name, "Connect") { (_: Containerd_Task_V2_ConnectRequest, _) in
            var response = Containerd_Task_V2_ConnectResponse()
            response.shimPid = UInt32(getpid())
            response.taskPid = UInt32(await pod.vmmPid)
            response.version = "clade \(CladeVersion.current)"
            return response
        }
        router.add(name, "Stats") { (request: Containerd_Task_V2_StatsRequest, _) in
            guard let vmm = await pod.vmm else { throw TTRPCError.status(.failedPrecondition, "container \(request.id) has no VM") }
            var response = Containerd_Task_V2_StatsResponse()
            response.stats = try PodStats.metrics(sandbox: vmm.sandbox, vmmPid: vmm.pid, in: pod.engine.controlGroups)
            return response
        }
        router.add(name, "Update") { (request: Containerd_Task_V2_UpdateTaskRequest, _) in
            try await pod.update(request)
            return Google_Protobuf_Empty()
        }
        router.add(name, "Shutdown") { (_: Containerd_Task_V2_ShutdownRequest, _) in
            await pod.shutdownIfIdle()
            return Google_Protobuf_Empty()
        }
        return router
    }
}
