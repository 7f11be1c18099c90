#!/usr/bin/env python3
"""Writes a one-layer OCI image archive (an image layout as a tar, what `ctr images import`
takes) of a root directory, for the containerd runtime tests.

usage: make-oci-archive.py ROOT_DIR OUT_TAR REF [CMD...]
"""
import gzip, hashlib, io, json, os, sys, tarfile

root, out, ref, cmd = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:] or ["/bin/sh"]
blobs = {}


def blob(data, media):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media, "digest": digest, "size": len(data)}


raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(directory, name)
            info = t.gettarinfo(path, os.path.relpath(path, root))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 1700000000
            if info.isreg():
                with open(path, "rb") as f:
                    t.addfile(info, f)
            else:
                t.addfile(info)
layer_tar = raw.getvalue()
compressed = gzip.compress(layer_tar, mtime=0)
layer = blob(compressed, "application/vnd.oci.image.layer.v1.tar+gzip")
config = blob(json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Cmd": cmd, "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "WorkingDir": "/"},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
}).encode(), "application/vnd.oci.image.config.v1+json")
manifest = blob(json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": config, "layers": [layer],
}).encode(), "application/vnd.oci.image.manifest.v1+json")
manifest["annotations"] = {"org.opencontainers.image.ref.name": ref}
index = json.dumps({"schemaVersion": 2, "manifests": [manifest]}).encode()

with tarfile.open(out, "w") as t:
    def add(name, data):
        info = tarfile.TarInfo(name)
        info.size, info.mtime = len(data), 1700000000
        t.addfile(info, io.BytesIO(data))
    add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    add("index.json", index)
    for digest, data in blobs.items():
        add("blobs/sha256/" + digest.split(":")[1], data)
