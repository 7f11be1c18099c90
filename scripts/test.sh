#!/usr/bin/env bash
# The whole test suite: builds the release binaries the integration tests drive (they boot
# real VMs through `clade`) together with the test targets, in one release build with
# -enable-testing (the same flags as scripts/build.sh, so nothing is compiled twice), then
# runs unit and integration tests one at a time so that TCG guests do not fight the tests
# for the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --static-swift-stdlib -Xlinker -s --scratch-path .build-agent --product clade-agent
swift build -c release -Xswiftc -enable-testing --build-tests
cp .build-agent/release/clade-agent .build/release/clade-agent
# Other people's clients, pinned, from PyPI: the contract tests drive clade with them.
scripts/python-clients.sh
swift test -c release -Xswiftc -enable-testing --skip-build --no-parallel "$@"
