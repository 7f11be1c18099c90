#!/usr/bin/env bash
# The whole test suite: builds the release binaries the integration tests drive (they boot
# real VMs through `clade`), then runs unit and integration tests one at a time so that
# TCG guests do not fight the tests for the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
swift test --no-parallel "$@"
