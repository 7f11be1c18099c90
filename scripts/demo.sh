#!/usr/bin/env bash
# The main job end to end: bake a snapshot, fork three children, run a command in each, clean up.
set -euo pipefail
cd "$(dirname "$0")/.."
clade=${CLADE_BIN:-.build/release/clade}
tag=demo-$$
"$clade" bake --tag "$tag" --warm 'echo warmed-up > /root/warm; sync'
ids=$("$clade" fork "$tag" -n 3 --json | python3 -c 'import json,sys; print(" ".join(json.loads(l)["id"] for l in sys.stdin if l.strip()))')
for id in $ids; do
    "$clade" exec "$id" -- sh -c 'echo "$(hostname): $(cat /root/warm), $(cat /sys/class/net/eth0/address)"'
done
"$clade" kill $ids >/dev/null
"$clade" rmi "$tag" >/dev/null
