#!/usr/bin/env bash
# The main job end to end: build a Debian Python image (once), bake a snapshot with numpy
# already imported once (page cache warm), fork four children, run Python in each, clean up.
set -euo pipefail
cd "$(dirname "$0")/.."
# Forks need root for now: QEMU 7.2 opens a memory-backend-file read-write even when it maps it
# private, and snapshot memory files are sealed 0444 (root is exempt). Re-run through sudo.
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then exec sudo --preserve-env=CLADE_BIN,CLADE_HOME "$(pwd)/scripts/demo.sh" "$@"; fi
    echo "demo.sh needs root (forks open sealed snapshot files): run it as root or install sudo" >&2
    exit 1
fi
clade=${CLADE_BIN:-.build/release/clade}
image=${CLADE_DEMO_IMAGE:-python}
if ! "$clade" image inspect "$image" >/dev/null 2>&1; then
    "$clade" image build --debian bookworm --packages python3,python3-numpy --name "$image"
fi
tag=demo-$$
"$clade" bake --image "$image" --memory 512 --tag "$tag" --warm 'python3 -c "import numpy"'
ids=$("$clade" fork "$tag" -n 4 --json | python3 -c 'import json,sys; print(" ".join(json.loads(l)["id"] for l in sys.stdin if l.strip()))')
for id in $ids; do
    "$clade" exec "$id" -- python3 -c 'import numpy, socket; print(f"{socket.gethostname()}: numpy says {numpy.arange(1, 101).sum()}")'
done
"$clade" kill $ids >/dev/null
"$clade" rmi "$tag" >/dev/null
