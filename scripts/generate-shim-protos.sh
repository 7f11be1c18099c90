#!/usr/bin/env bash
# Regenerates Sources/CladeShim/Generated/*.pb.swift: the containerd shim v2 messages (Task
# service, task events, the ttrpc events service, cgroup metrics) and ttrpc's own frame
# messages. Run it by hand after changing what is generated; CI never runs it (the
# swift-protobuf plugin takes ~10 minutes to build on these machines).
#
#   apt-get install -y protobuf-compiler golang-github-containerd-containerd-dev
#   git clone -b 1.39.0 https://github.com/apple/swift-protobuf /tmp/swift-protobuf
#   (cd /tmp/swift-protobuf && swift build -c release --product protoc-gen-swift)
#   PROTOC_GEN_SWIFT=/tmp/swift-protobuf/.build/release/protoc-gen-swift scripts/generate-shim-protos.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
gocode=${GOCODE:-/usr/share/gocode/src}
plugin=${PROTOC_GEN_SWIFT:?set PROTOC_GEN_SWIFT to a built protoc-gen-swift}
out="$root/Sources/CladeShim/Generated"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# containerd's files import gogoproto options, which only change Go code: drop them so protoc
# needs nothing beyond the files themselves. The wire format (names, numbers, types) is untouched.
copy() {
    local source="$1" target="$work/$2"
    mkdir -p "$(dirname "$target")"
    sed -E \
        -e '/^[[:space:]]*import (weak )?"gogoproto/d' -e '/^import weak /d' \
        -e '/^option \((gogoproto|containerd\.plugin)\.[a-z_]+\)/d' \
        -e '/^[[:space:]]*option \((gogoproto|containerd\.plugin)\.[a-z_]+\)/d' \
        -e 's/ \[\(gogoproto[^]]*\]//g' \
        -e 's/ \[\(containerd\.plugin[^]]*\]//g' \
        "$source" >"$target"
}
c=github.com/containerd
copy "$gocode/$c/containerd/runtime/v2/task/shim.proto" "$c/containerd/runtime/v2/task/shim.proto"
copy "$gocode/$c/containerd/api/types/mount.proto" "$c/containerd/api/types/mount.proto"
copy "$gocode/$c/containerd/api/types/task/task.proto" "$c/containerd/api/types/task/task.proto"
copy "$gocode/$c/containerd/api/events/task.proto" "$c/containerd/api/events/task.proto"
copy "$gocode/$c/containerd/api/services/ttrpc/events/v1/events.proto" "$c/containerd/api/services/ttrpc/events/v1/events.proto"
copy "$gocode/$c/cgroups/stats/v1/metrics.proto" "$c/cgroups/stats/v1/metrics.proto"
copy "$gocode/$c/cgroups/v2/stats/metrics.proto" "$c/cgroups/v2/stats/metrics.proto"
# ttrpc's frame messages and google.rpc.Status, written from ttrpc's Go types (ttrpc has no .proto).
cp "$root/Sources/CladeShim/Protos/ttrpc.proto" "$work/ttrpc.proto"

rm -f "$out"/*.pb.swift
mkdir -p "$out"
(cd "$work" && find . -name '*.proto' -printf '%P\n' | sort | xargs protoc \
    --plugin=protoc-gen-swift="$plugin" \
    --swift_opt=FileNaming=PathToUnderscores --swift_opt=Visibility=Public \
    --swift_out="$out" -I . -I /usr/include)
ls "$out"
