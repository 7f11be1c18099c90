#!/usr/bin/env bash
# Installs the Python clients the contract tests use, pinned, into virtual environments of the
# project's own. Idempotent.
#   .build/pyclients  forkd's SDK and the websockets client (proxy test)
#   .build/e2bclient  E2B's SDK (the E2B API scenarios; it needs Python >= 3.11)
set -euo pipefail
cd "$(dirname "$0")/.."

install() {
    local venv=$1
    shift
    local requirements="$*"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$requirements" ]; then return 0; fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check $requirements
    echo "$requirements" > "$venv/.requirements"
    echo "python clients: $requirements in $venv"
}

install .build/pyclients forkd==0.5.3 websockets==15.0.1
install .build/e2bclient e2b==2.63.0
