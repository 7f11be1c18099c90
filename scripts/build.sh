#!/usr/bin/env bash
# Builds clade and clade-agent (release, static Swift runtime, stripped) into .build/release.
# The agent must be self-contained: it runs inside guests that have no Swift runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --static-swift-stdlib -Xlinker -s --product clade-agent
swift build -c release --static-swift-stdlib -Xlinker -s --product clade
echo "built: $(pwd)/.build/release/clade and clade-agent"
