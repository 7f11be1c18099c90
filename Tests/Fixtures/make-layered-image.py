#!/usr/bin/env python3
"""Builds a three-layer OCI image layout on top of a base root directory, for clade's image
tests: whiteouts, an opaque directory, hard links, a setuid file, a file capability, a device
node, a FIFO, a long name, owners, and a config with User, Env, WorkingDir, Entrypoint, Cmd.

usage: make-layered-image.py BASE_DIR LAYOUT_DIR TAG [--no-zstd]
(--no-zstd gzips the second layer instead: Docker's formats have no zstd layers.)
"""
import gzip, hashlib, io, json, os, struct, subprocess, sys, tarfile

base, layout, tag = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)


def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def tar_bytes(add):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as t:
        add(t)
    return buffer.getvalue()


def entry(t, name, kind=tarfile.REGTYPE, data=b"", mode=0o644, uid=0, gid=0, link="", xattrs=None, devmajor=0, devminor=0):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, 1700000000
    info.linkname, info.devmajor, info.devminor = link, devmajor, devminor
    if xattrs:
        info.pax_headers = {"SCHILY.xattr." + k: v.decode("latin-1") for k, v in xattrs.items()}
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def layer1(t):
    for root, dirs, files in os.walk(base):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            path = os.path.join(root, name)
            t.add(path, arcname=os.path.relpath(path, base), recursive=False)
    entry(t, "etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234:app:/home/app:/bin/sh\n")
    entry(t, "etc/group", data=b"root:x:0:\napp:x:1234:\nstaff:x:50:\n")
    entry(t, "etc/removeme", data=b"gone in layer 2\n")
    entry(t, "data", tarfile.DIRTYPE, mode=0o755)
    entry(t, "data/lower-a", data=b"a\n")
    entry(t, "data/sub", tarfile.DIRTYPE, mode=0o755)
    entry(t, "data/sub/lower-c", data=b"c\n")
    entry(t, "opt", tarfile.DIRTYPE, mode=0o755)
    entry(t, "opt/keep", tarfile.DIRTYPE, mode=0o755)
    entry(t, "opt/keep/x", data=b"kept\n")


# cap_net_raw+ep: VFS_CAP_REVISION_2 | effective, permitted = 1 << 13.
capability = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)
long_name = "opt/" + "l" * 200


def layer2(t):
    entry(t, "etc/.wh.removeme")
    entry(t, "data/.wh..wh..opq")
    entry(t, "data/upper-b", data=b"b\n")
    entry(t, "usr/local/bin", tarfile.DIRTYPE, mode=0o755)
    entry(t, "usr/local/bin/tool", data=b"#!/bin/sh\necho tool\n", mode=0o755)
    entry(t, "usr/local/bin/tool-link", tarfile.LNKTYPE, link="usr/local/bin/tool")
    entry(t, "usr/local/bin/suid", data=b"#!/bin/sh\n", mode=0o4755)
    # A copy of the base's busybox with cap_net_raw+ep.
    with open(os.path.join(base, "bin", "busybox"), "rb") as f:
        entry(t, "usr/local/bin/capbox", data=f.read(), mode=0o755, xattrs={"security.capability": capability})
    # busybox picks its applet by name: this link runs capbox as `cat`.
    entry(t, "usr/local/capbin", tarfile.DIRTYPE, mode=0o755)
    entry(t, "usr/local/capbin/cat", tarfile.SYMTYPE, link="../bin/capbox")
    entry(t, "opt/null-dev", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3)
    entry(t, "opt/fifo", tarfile.FIFOTYPE, mode=0o600)
    entry(t, "opt/link", tarfile.SYMTYPE, link="/opt/keep/x")
    entry(t, long_name, data=b"long\n")
    entry(t, "opt/sticky", tarfile.DIRTYPE, mode=0o1777)


def layer3(t):
    entry(t, "home", tarfile.DIRTYPE, mode=0o755)
    entry(t, "home/app", tarfile.DIRTYPE, mode=0o750, uid=1234, gid=1234)
    entry(t, "home/app/owned", data=b"mine\n", mode=0o640, uid=1234, gid=50)


layers = []
diff_ids = []
raw1 = tar_bytes(layer1)
diff_ids.append("sha256:" + hashlib.sha256(raw1).hexdigest())
layers.append(dict(blob(gzip.compress(raw1, mtime=0)), mediaType="application/vnd.oci.image.layer.v1.tar+gzip"))
raw2 = tar_bytes(layer2)
diff_ids.append("sha256:" + hashlib.sha256(raw2).hexdigest())
if "--no-zstd" in sys.argv:
    layers.append(dict(blob(gzip.compress(raw2, mtime=0)), mediaType="application/vnd.oci.image.layer.v1.tar+gzip"))
else:
    zstd = subprocess.run(["zstd", "-q", "-c"], input=raw2, stdout=subprocess.PIPE, check=True).stdout
    layers.append(dict(blob(zstd), mediaType="application/vnd.oci.image.layer.v1.tar+zstd"))
raw3 = tar_bytes(layer3)
diff_ids.append("sha256:" + hashlib.sha256(raw3).hexdigest())
layers.append(dict(blob(raw3), mediaType="application/vnd.oci.image.layer.v1.tar"))

config = {
    "architecture": "amd64", "os": "linux",
    "config": {
        "User": "app", "WorkingDir": "/home/app",
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "GREETING=hello from config"],
        "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo entry:$GREETING:$(id -u)"],
        "ExposedPorts": {"8080/tcp": {}}, "Labels": {"org.example.test": "yes"},
    },
    "rootfs": {"type": "layers", "diff_ids": diff_ids},
}
config_descriptor = dict(blob(json.dumps(config, sort_keys=True).encode()), mediaType="application/vnd.oci.image.config.v1+json")
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": config_descriptor, "layers": layers}
manifest_descriptor = dict(blob(json.dumps(manifest, sort_keys=True).encode()), mediaType="application/vnd.oci.image.manifest.v1+json")
manifest_descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
with open(os.path.join(layout, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest_descriptor]}, f)
with open(os.path.join(layout, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
print(manifest_descriptor["digest"])
