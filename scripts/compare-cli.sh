#!/usr/bin/env bash
# The CLI's hot paths, side by side for several builds of clade, in one run on one machine:
#   scripts/compare-cli.sh LABEL=PATH/TO/clade [LABEL=PATH/TO/clade ...]
#   e.g. scripts/compare-cli.sh 0.6.0=.build-compare/67f9966/.build/release/clade tree=.build/release/clade
#
# Each build gets a fresh store of its own and bakes the default image there, then is measured:
# `fork base -n 8` wall time (ROUNDS runs, default 3), `exec ID -- true` and `--version` on an
# idle fork (median of 15), and standby then resume of a fork (median of 3). The builds take
# turns per round, so drift in the machine's load hits them alike. Prints one table.
# Build an older commit with scripts/compare-bench.sh (it leaves the binary in .build-compare/).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/compare-cli.sh LABEL=CLADE_BINARY ..." >&2; exit 2; }
rounds=${ROUNDS:-3}
results=$(mktemp)
declare -A homes
now() { date +%s%N; }
milliseconds() { echo $(( ($2 - $1) / 1000000 )); }

for pair in "$@"; do
    label=${pair%%=*}
    binary=${pair#*=}
    home=$(mktemp -d /var/tmp/clade-compare-cli-XXXXXX)
    chmod 755 "$home"
    homes[$label]=$home
    echo "== $label: baking the default image in $home" >&2
    CLADE_HOME=$home "$binary" bake --tag base >/dev/null
done

for round in $(seq "$rounds"); do
    for pair in "$@"; do
        label=${pair%%=*}
        binary=${pair#*=}
        export CLADE_HOME=${homes[$label]}
        begun=$(now)
        "$binary" fork base -n 8 --json >/dev/null
        echo "$label fork8_wall_ms $(milliseconds "$begun" "$(now)")" >> "$results"
        "$binary" kill --all >/dev/null
        id=$("$binary" fork base -n 1 --json | python3 -c 'import json, sys; print(json.loads(sys.stdin.readline())["id"])')
        for _ in $(seq 15); do
            begun=$(now)
            "$binary" exec "$id" -- true
            echo "$label exec_true_ms $(milliseconds "$begun" "$(now)")" >> "$results"
            begun=$(now)
            "$binary" --version >/dev/null
            echo "$label version_ms $(milliseconds "$begun" "$(now)")" >> "$results"
        done
        begun=$(now)
        "$binary" standby "$id" >/dev/null
        echo "$label standby_ms $(milliseconds "$begun" "$(now)")" >> "$results"
        begun=$(now)
        "$binary" resume "$id" >/dev/null
        echo "$label resume_ms $(milliseconds "$begun" "$(now)")" >> "$results"
        "$binary" kill --all >/dev/null
    done
done
unset CLADE_HOME

for pair in "$@"; do
    label=${pair%%=*}
    binary=${pair#*=}
    CLADE_HOME=${homes[$label]} "$binary" rmi --cascade base >/dev/null 2>&1 || true
    rm -rf "${homes[$label]}"
done
python3 - "$results" "$@" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
labels = [pair.split("=", 1)[0] for pair in sys.argv[2:]]
figures = ["fork8_wall_ms", "exec_true_ms", "version_ms", "standby_ms", "resume_ms"]
print(f"{'figure (median; min-max)':26s}" + "".join(f"{label:>22s}" for label in labels))
for figure in figures:
    cells = []
    for label in labels:
        values = [int(r[2]) for r in rows if r[0] == label and r[1] == figure]
        cells.append(f"{statistics.median(values):.0f} ({min(values)}-{max(values)})" if values else "-")
    print(f"{figure:26s}" + "".join(f"{cell:>22s}" for cell in cells))
PY
rm -f "$results"
