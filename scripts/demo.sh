#!/usr/bin/env bash
# The main job end to end: bake a snapshot, fork three children, run a command in each, clean up.
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
tag=demo-$$
"$clade" bake --tag "$tag" --warm 'echo warmed-up > /root/warm; sync'
ids=$("$clade" fork "$tag" -n 3 --json | python3 -c 'import json,sys; print(" ".join(json.loads(l)["id"] for l in sys.stdin if l.strip()))')
for id in $ids; do
    "$clade" exec "$id" -- sh -c 'echo "$(hostname): $(cat /root/warm), $(cat /sys/class/net/eth0/address)"'
done
"$clade" kill $ids >/dev/null
"$clade" rmi "$tag" >/dev/null
