#!/usr/bin/env bash
# Installs everything clade needs on a Debian bookworm host, then provisions the guest kernel.
# Run as root (or with sudo).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    qemu-system-x86 qemu-utils e2fsprogs busybox-static cpio libzstd-dev zstd libarchive-dev libsqlite3-dev xfsprogs \
    docker-registry skopeo apache2-utils python3 \
    ca-certificates binutils >/dev/null
"$here/provision-kernel.sh" "${CLADE_KERNEL_DIR:-/usr/local/lib/clade/kernel}"
