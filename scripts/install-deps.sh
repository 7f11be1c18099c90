#!/usr/bin/env bash
# Installs everything clade needs on a Debian bookworm host, then provisions the guest kernel.
# Needs root: run it as root, or as a user with sudo (it re-runs itself through sudo).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then exec sudo --preserve-env=CLADE_KERNEL_DIR "$here/install-deps.sh" "$@"; fi
    echo "install-deps.sh needs root: run it as root or install sudo" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    qemu-system-x86 qemu-utils e2fsprogs busybox-static cpio libzstd-dev zstd libarchive-dev libsqlite3-dev xfsprogs \
    mmdebstrap debian-archive-keyring uidmap docker-registry skopeo apache2-utils python3 \
    python3-venv ca-certificates binutils zlib1g-dev libssl-dev slirp4netns libfuse3-dev fuse3 >/dev/null
"$here/provision-kernel.sh" "${CLADE_KERNEL_DIR:-/usr/local/lib/clade/kernel}"
