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
# The agent's build has a scratch path (and lock) of its own, so it runs beside the main one, at
# the lowest priority: it takes the cores that the main build's chain of one-module-at-a-time
# compiles leaves idle, not the main build's.
agent_log=$(mktemp "${TMPDIR:-/tmp}/clade-agent-build.XXXXXX")
nice -n 19 swift build -c release --static-swift-stdlib -Xlinker -s --scratch-path .build-agent --product clade-agent > "$agent_log" 2>&1 &
agent_build=$!
trap 'kill "$agent_build" 2>/dev/null || true' EXIT
if [ "${1:-}" = "--tests" ]; then
    # The test bundle's graph holds clade and the shim too (CladeCLITests depends on them), so
    # this one build links both binaries as well.
    swift build -c release -Xswiftc -enable-testing --product cladePackageTests
else
    swift build -c release -Xswiftc -enable-testing --product clade
    swift build -c release -Xswiftc -enable-testing --product containerd-shim-clade-v2
fi
if ! wait "$agent_build"; then
    cat "$agent_log" >&2
    rm -f "$agent_log"
    echo "building clade-agent failed (its output is above)" >&2
    exit 1
fi
tail -n 1 "$agent_log"
rm -f "$agent_log"
cp .build-agent/release/clade-agent .build/release/clade-agent
echo "built: $(pwd)/.build/release/clade, clade-agent and containerd-shim-clade-v2"
