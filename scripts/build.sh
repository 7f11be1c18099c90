#!/usr/bin/env bash
# Builds clade and clade-agent into .build/release; with --tests, the test bundle too.
# The agent must be self-contained (static Swift runtime): it runs inside guests that have no
# Swift installed, so it is built apart, in .build-agent, and copied next to clade.
# clade itself is built with -enable-testing so that scripts/test.sh reuses this very build
# for the test targets instead of compiling everything a second time in debug mode. Only the
# products clade needs are built: a bare `swift build` would also build the example and tool
# executables of its dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --static-swift-stdlib -Xlinker -s --scratch-path .build-agent --product clade-agent
if [ "${1:-}" = "--tests" ]; then
    swift build -c release -Xswiftc -enable-testing --product cladePackageTests
fi
swift build -c release -Xswiftc -enable-testing --product clade
swift build -c release -Xswiftc -enable-testing --product containerd-shim-clade-v2
cp .build-agent/release/clade-agent .build/release/clade-agent
echo "built: $(pwd)/.build/release/clade, clade-agent and containerd-shim-clade-v2"
