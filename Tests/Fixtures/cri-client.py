#!/usr/bin/python3
"""A CRI client for clade's containerd runtime tests: the kubelet's calls, one per command,
against containerd's CRI plugin over gRPC (Debian's python3-grpcio; the stubs are generated
from cri/runtime.proto with python3-grpc-tools at each start, into a temporary directory).
Each command prints its response as JSON; a gRPC error prints {"error", "code"} and exits 1.

usage: cri-client.py SOCKET COMMAND [ARGS...]
  run-pod NAME HANDLER [KEY=VALUE annotation...]       -> {"id"}
  pod-status POD                                       -> {"state", "ip"}
  create POD NAME IMAGE HANDLER -- ARGS...             -> {"id"}   (the pod config again, as the kubelet sends it)
  start CONTAINER | stop CONTAINER | remove CONTAINER
  status CONTAINER                                     -> {"state", "exit_code", "reason", "message"}
  exec-sync CONTAINER TIMEOUT -- ARGS...               -> {"stdout", "stderr", "exit_code"}
  stop-pod POD | remove-pod POD
"""
import atexit, json, os, shutil, sys, tempfile

from grpc_tools import protoc
import grpc

here = os.path.dirname(os.path.abspath(__file__))
generated = tempfile.mkdtemp(prefix="cri-stubs-")
atexit.register(shutil.rmtree, generated, ignore_errors=True)
if protoc.main(["protoc", f"-I{here}/cri", f"--python_out={generated}", f"--grpc_python_out={generated}", f"{here}/cri/runtime.proto"]) != 0:
    sys.exit("cannot generate the CRI stubs")
sys.path.insert(0, generated)
import runtime_pb2 as api  # noqa: E402
import runtime_pb2_grpc as rpc  # noqa: E402

socket, command, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
stub = rpc.RuntimeServiceStub(grpc.insecure_channel(f"unix://{socket}"))


def pod_config(name, annotations):
    return api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="default"),
        hostname=name, annotations=annotations, labels={"test": "clade"})


def after_dashes(args):
    return args[args.index("--") + 1:]


try:
    if command == "run-pod":
        annotations = dict(a.split("=", 1) for a in rest[2:])
        reply = stub.RunPodSandbox(api.RunPodSandboxRequest(config=pod_config(rest[0], annotations), runtime_handler=rest[1]), timeout=300)
        out = {"id": reply.pod_sandbox_id}
    elif command == "pod-status":
        status = stub.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=rest[0]), timeout=60).status
        out = {"state": api.PodSandboxState.Name(status.state), "ip": status.network.ip}
    elif command == "create":
        pod, name, image = rest[0], rest[1], rest[2]
        config = api.ContainerConfig(metadata=api.ContainerMetadata(name=name), image=api.ImageSpec(image=image), args=after_dashes(rest))
        reply = stub.CreateContainer(api.CreateContainerRequest(pod_sandbox_id=pod, config=config, sandbox_config=pod_config(pod, {})), timeout=300)
        out = {"id": reply.container_id}
    elif command == "start":
        stub.StartContainer(api.StartContainerRequest(container_id=rest[0]), timeout=300)
        out = {}
    elif command == "stop":
        stub.StopContainer(api.StopContainerRequest(container_id=rest[0], timeout=10), timeout=120)
        out = {}
    elif command == "remove":
        stub.RemoveContainer(api.RemoveContainerRequest(container_id=rest[0]), timeout=120)
        out = {}
    elif command == "status":
        status = stub.ContainerStatus(api.ContainerStatusRequest(container_id=rest[0]), timeout=60).status
        out = {"state": api.ContainerState.Name(status.state), "exit_code": status.exit_code, "reason": status.reason, "message": status.message}
    elif command == "exec-sync":
        reply = stub.ExecSync(api.ExecSyncRequest(container_id=rest[0], cmd=after_dashes(rest), timeout=int(rest[1])), timeout=int(rest[1]) + 30)
        out = {"stdout": reply.stdout.decode(), "stderr": reply.stderr.decode(), "exit_code": reply.exit_code}
    elif command == "stop-pod":
        stub.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=rest[0]), timeout=120)
        out = {}
    elif command == "remove-pod":
        stub.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=rest[0]), timeout=120)
        out = {}
    else:
        sys.exit(f"unknown command {command}")
except grpc.RpcError as error:
    print(json.dumps({"error": error.details(), "code": error.code().name}))
    sys.exit(1)
print(json.dumps(out))
