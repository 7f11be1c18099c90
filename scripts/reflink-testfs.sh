#!/usr/bin/env bash
# Mounts a small XFS filesystem with reflink support on a loop device, so that the tests of
# clade's reflink path run instead of skipping. Prints the mount point. Needs root.
# Usage: scripts/reflink-testfs.sh [MOUNTPOINT]   (default /mnt/clade-reflink)
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then exec sudo "$(cd "$(dirname "$0")" && pwd)/reflink-testfs.sh" "$@"; fi
    echo "reflink-testfs.sh needs root (mount): run it as root or install sudo" >&2
    exit 1
fi
mountpoint=${1:-/mnt/clade-reflink}
image=${CLADE_REFLINK_IMAGE:-/var/tmp/clade-reflink.img}
if mountpoint -q "$mountpoint" 2>/dev/null; then
    echo "$mountpoint"
    exit 0
fi
truncate -s 1G "$image"
mkfs.xfs -q -f -m reflink=1 "$image"
mkdir -p "$mountpoint"
mount -o loop "$image" "$mountpoint"
echo "$mountpoint"
