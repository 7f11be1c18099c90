#!/usr/bin/env bash
# Installs the Python clients the contract tests use (forkd's SDK, and the websockets client for the proxy test; pinned) into
# .build/pyclients, a virtual environment of the project's own. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.build/pyclients
requirements="forkd==0.5.3 websockets==15.0.1"
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$requirements" ]; then exit 0; fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check $requirements
echo "$requirements" > "$venv/.requirements"
echo "python clients: $requirements in $venv"
