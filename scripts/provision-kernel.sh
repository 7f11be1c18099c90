#!/usr/bin/env bash
# Provisions clade's guest kernel from Debian's linux-image-cloud-amd64 package:
# downloads the package with apt (nothing is installed into the host's /boot), extracts
# the kernel image and the virtio modules clade's initrd loads, into DEST.
# Usage: scripts/provision-kernel.sh [DEST]   (default /usr/local/lib/clade/kernel)
set -euo pipefail
dest=${1:-/usr/local/lib/clade/kernel}
modules=(virtio_ring virtio virtio_mmio virtio_blk failover net_failover virtio_net virtio_console virtio-rng)

package=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$package" ]; then
    echo "provision-kernel: apt does not know linux-image-cloud-amd64; run 'apt-get update' first" >&2
    exit 1
fi
release=${package#linux-image-}
if [ -f "$dest/release" ] && [ "$(cat "$dest/release")" = "$release" ] && [ -f "$dest/vmlinuz" ]; then
    echo "provision-kernel: $release already at $dest"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -o APT::Sandbox::User=root "$package" >/dev/null)
dpkg-deb -x "$work"/linux-image-*.deb "$work/x"
stage="$dest.partial.$$"
rm -rf "$stage"
mkdir -p "$stage/modules"
cp "$work/x/boot/vmlinuz-$release" "$stage/vmlinuz"
for module in "${modules[@]}"; do
    file=$(find "$work/x/lib/modules/$release" -name "$module.ko" -o -name "$module.ko.xz" -o -name "$module.ko.zst" | head -n 1)
    if [ -z "$file" ]; then
        echo "provision-kernel: module $module not found in $package" >&2
        exit 1
    fi
    case "$file" in
        *.xz) xz -dc "$file" > "$stage/modules/$module.ko" ;;
        *.zst) zstd -qdc "$file" > "$stage/modules/$module.ko" ;;
        *) cp "$file" "$stage/modules/$module.ko" ;;
    esac
done
echo "$release" > "$stage/release"
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.old"
[ -e "$dest" ] && mv "$dest" "$dest.old"
mv "$stage" "$dest"
rm -rf "$dest.old"
echo "provision-kernel: $release installed at $dest"
