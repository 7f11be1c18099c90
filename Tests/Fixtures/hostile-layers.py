#!/usr/bin/env python3
"""Writes clade's corpus of hostile image layers into OUTDIR, one tar per case, and
OUTDIR/expected.tsv: file name, a text the refusal must contain (the entry it names).

usage: hostile-layers.py OUTDIR
"""
import gzip, io, os, sys, tarfile

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
expected = []


def layer(name, entries, must_contain, compress=False):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path, kind, link, data in entries:
            info = tarfile.TarInfo(path)
            info.type, info.linkname, info.mode = kind, link, 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    data = buffer.getvalue()
    if compress:
        data = gzip.compress(data, mtime=0)
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
    expected.append((name, must_contain))


F, D, S, H = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
layer("absolute-path.tar", [("/etc/clade-pwned", F, "", b"x")], "/etc/clade-pwned")
layer("dotdot-path.tar", [("../clade-pwned", F, "", b"x")], "../clade-pwned")
layer("dotdot-inside-path.tar", [("a", D, "", b""), ("a/../../clade-pwned", F, "", b"x")], "a/../../clade-pwned")
layer("symlink-relative-escape.tar", [("up", S, "../../../../../../tmp", b""), ("up/clade-pwned", F, "", b"x")], "up/clade-pwned")
layer("symlink-absolute-escape.tar", [("root", S, "/../..", b""), ("root/clade-pwned", F, "", b"x")], "root/clade-pwned")
layer("symlink-chain-escape.tar", [("a", S, "b/..", b""), ("b", S, "..", b""), ("a/clade-pwned", F, "", b"x")], "a/clade-pwned")
layer("hardlink-dotdot.tar", [("h", H, "../../etc/passwd", b"")], "'h'")
layer("hardlink-absolute.tar", [("h", H, "/etc/passwd", b"")], "'h'")
layer("hardlink-through-symlink.tar", [("up", S, "../..", b""), ("h", H, "up/etc/passwd", b"")], "'h'")
layer("hardlink-missing.tar", [("h", H, "nothing-here", b"")], "'h'")
layer("symlink-loop.tar", [("a", S, "b", b""), ("b", S, "a", b""), ("a/x", F, "", b"x")], "a/x")
# 64 MiB of zeros, a few KiB compressed: refused once past the size limit the test sets.
layer("tar-bomb.tar.gz", [("zeros", F, "", bytes(64 << 20))], "size limit", compress=True)
with open(os.path.join(out, "expected.tsv"), "w") as f:
    for name, text in expected:
        f.write(f"{name}\t{text}\n")
