"""Measures clade through E2B's SDK against a cold boot, in one run.

    E2B_API_URL=http://127.0.0.1:3000 E2B_SANDBOX_URL=http://127.0.0.1:3000 E2B_API_KEY=... \
        .build/e2bclient/bin/python scripts/bench-e2b.py [--clade PATH] [--home DIR] [-n 5] [--forks 8]

Baseline: `clade run --image base -- echo ready` (cold boot of the template's image, then the
command). Measured: `Sandbox.create("base")` until the first output of `commands.run("echo
ready")` streams back (a fork of the baked template), and `fork(count=N)` of a running sandbox.
Prints each sample, the medians and the ratio cold / create.
"""

import argparse
import os
import statistics
import subprocess
import time

from e2b import Sandbox


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clade", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "clade"))
    parser.add_argument("--home", default=os.environ.get("CLADE_HOME"), help="the daemon's store (for the cold-boot baseline)")
    parser.add_argument("--template", default="base")
    parser.add_argument("-n", type=int, default=5, help="samples of each")
    parser.add_argument("--forks", type=int, default=8)
    args = parser.parse_args()
    home = ["--home", args.home] if args.home else []

    cold = []
    for _ in range(args.n):
        start = time.time()
        out = subprocess.run([args.clade, "run", "--image", args.template, *home, "--", "echo", "ready"], capture_output=True, text=True)
        if out.returncode != 0 or out.stdout != "ready\n":
            raise SystemExit(f"cold run failed: {out.stderr}")
        cold.append(time.time() - start)
        print(f"cold boot + echo: {cold[-1]:.2f} s", flush=True)

    create = []
    for _ in range(args.n):
        first = []
        start = time.time()
        sb = Sandbox.create(args.template)
        sb.commands.run("echo ready", on_stdout=lambda line: first.append(time.time()))
        create.append(first[0] - start)
        print(f"Sandbox.create + first output: {create[-1]:.2f} s", flush=True)
        sb.kill()

    sb = Sandbox.create(args.template)
    fork_times = []
    try:
        for _ in range(max(1, args.n // 2)):
            start = time.time()
            children = sb.fork(count=args.forks)
            fork_times.append(time.time() - start)
            failed = [c for c in children if isinstance(c, Exception)]
            print(f"fork(count={args.forks}): {fork_times[-1]:.2f} s, {len(children) - len(failed)} running", flush=True)
            if failed:
                raise SystemExit(f"forks failed: {failed}")
            outputs = {c.commands.run("hostname").stdout for c in children}
            if len(outputs) != args.forks:
                raise SystemExit(f"children share hostnames: {outputs}")
            for c in children:
                c.kill()
    finally:
        sb.kill()

    cold_median, create_median = statistics.median(cold), statistics.median(create)
    print(f"median cold boot + echo: {cold_median:.2f} s")
    print(f"median Sandbox.create + first output: {create_median:.2f} s")
    print(f"median fork(count={args.forks}): {statistics.median(fork_times):.2f} s")
    print(f"ratio cold / create: {cold_median / create_median:.1f}x")


if __name__ == "__main__":
    main()
