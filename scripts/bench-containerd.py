#!/usr/bin/env python3
"""Pod start time under containerd, three runtimes side by side in one run:

    sudo python3 scripts/bench-containerd.py [-n 5] [--clade-bin .build/release]

- runc: `ctr run --rm --runtime io.containerd.runc.v2 IMAGE ID echo first` (containerd's default);
- clade cold: the same with `--runtime io.containerd.clade.v2`: a VM booted from the image
  (its VM image is converted on the first run and cached; the first sample is reported apart);
- clade fork: the same with `--annotation clade.dev/snapshot=TAG`: a fork of a snapshot baked
  from the built-in image.

Each sample is the time from starting `ctr run` to the container's first byte of output, and
to `ctr` exiting (the container gone). It starts a containerd of its own (own root, state and
sockets, in a temporary directory) and a clade store of its own, and removes both at the end.
Prints each sample, the medians, and the ratios cold/fork and fork/runc.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)


def timed(argv, env):
    """Seconds to the first byte of stdout, and to the exit."""
    start = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = process.stdout.read(1)
    first_at = time.monotonic() - start
    rest, err = process.communicate()
    total = time.monotonic() - start
    if process.returncode != 0 or not first:
        sys.exit(f"{' '.join(argv)} failed ({process.returncode}): {err.decode()}")
    return first_at, total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=5, help="samples of each runtime")
    parser.add_argument("--clade-bin", default=os.path.join(root, ".build", "release"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: containerd and runc need it")
    work = tempfile.mkdtemp(prefix="ctdb-", dir="/tmp")
    env = dict(os.environ)
    env["PATH"] = args.clade_bin + ":" + env.get("PATH", "/usr/bin:/bin")
    env["CLADE_HOME"] = os.path.join(work, "home")
    socket = os.path.join(work, "c.sock")
    with open(os.path.join(work, "config.toml"), "w") as f:
        f.write(f'version = 2\nroot = "{work}/root"\nstate = "{work}/state"\n'
                f'[grpc]\n  address = "{socket}"\n[ttrpc]\n  address = "{socket}.ttrpc"\n')
    daemon = subprocess.Popen(["containerd", "--config", os.path.join(work, "config.toml")],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "containerd.log"), "w"), env=env)
    ctr = ["ctr", "--address", socket]
    try:
        for _ in range(300):
            if subprocess.run(ctr + ["version"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        image_root = os.path.join(work, "image-root")
        os.makedirs(os.path.join(image_root, "bin"))
        shutil.copy("/bin/busybox", os.path.join(image_root, "bin", "busybox"))
        for applet in ["sh", "echo"]:
            os.symlink("busybox", os.path.join(image_root, "bin", applet))
        image = "docker.io/library/clade-bench:1"
        archive = os.path.join(work, "image.tar")
        subprocess.run([sys.executable, os.path.join(root, "Tests", "Fixtures", "make-oci-archive.py"), image_root, archive, image], check=True)
        subprocess.run(ctr + ["images", "import", archive], check=True, capture_output=True)
        subprocess.run([os.path.join(args.clade_bin, "clade"), "bake", "--tag", "bench"], check=True, env=env, capture_output=True)

        def sample(name, options, count):
            results = []
            for index in range(count):
                argv = ctr + ["run", "--rm"] + options + [image, f"{name}-{index}", "echo", "first"]
                results.append(timed(argv, env))
                print(f"{name:11} sample {index + 1}: first output {results[-1][0] * 1000:7.0f} ms, exit {results[-1][1] * 1000:7.0f} ms", flush=True)
            return results

        first_cold = sample("clade-first", ["--runtime", "io.containerd.clade.v2"], 1)
        runc = sample("runc", ["--runtime", "io.containerd.runc.v2"], args.n)
        cold = sample("clade-cold", ["--runtime", "io.containerd.clade.v2"], args.n)
        fork = sample("clade-fork", ["--runtime", "io.containerd.clade.v2", "--annotation", "clade.dev/snapshot=bench"], args.n)

        def median(results, index):
            return statistics.median(r[index] for r in results) * 1000

        print()
        print("median ms          first output     exit")
        for name, results in [("runc", runc), ("clade cold", cold), ("clade fork", fork)]:
            print(f"{name:18} {median(results, 0):12.0f} {median(results, 1):8.0f}")
        print(f"{'clade cold, 1st':18} {first_cold[0][0] * 1000:12.0f} {first_cold[0][1] * 1000:8.0f}  (includes converting the image)")
        print(f"ratio cold/fork (first output): {median(cold, 0) / median(fork, 0):.1f}x")
        print(f"ratio fork/runc (first output): {median(fork, 0) / median(runc, 0):.1f}x")
    finally:
        daemon.terminate()
        daemon.wait()
        subprocess.run(["umount", "-R", "-l", os.path.join(work, "root")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
