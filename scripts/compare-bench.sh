#!/usr/bin/env bash
# Side-by-side benchmark of an older commit and this tree, on one machine, in one run.
#   scripts/compare-bench.sh COMMIT [BENCH ARGUMENTS...]      default: fork -n 8
#   e.g. scripts/compare-bench.sh 67f9966 fork -n 8
#        ROUNDS=3 scripts/compare-bench.sh d8d4b04 branch
#
# COMMIT is checked out as a git worktree in .build-compare/COMMIT and built there in release
# mode by its own scripts/build.sh (the agent static, beside clade). This tree must be
# built already (scripts/build.sh). Each side runs `clade bench ARGUMENTS --json` in a fresh store
# of its own, alternating old and new ROUNDS times (default 2) so that drift in the machine's
# load hits both; every result goes to .build-compare/results-COMMIT.jsonl, one JSON line each,
# and a summary of the medians is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/compare-bench.sh COMMIT [BENCH ARGUMENTS...]" >&2; exit 2; }
commit=$(git rev-parse --short "$1")
shift
[ $# -gt 0 ] || set -- fork -n 8
rounds=${ROUNDS:-2}
new_bin=$(pwd)/.build/release/clade
[ -x "$new_bin" ] || { echo "build this tree first: scripts/build.sh" >&2; exit 1; }

old_tree=$(pwd)/.build-compare/$commit
if [ ! -d "$old_tree" ]; then
    mkdir -p .build-compare
    git worktree add --detach "$old_tree" "$commit" >/dev/null
fi
if [ ! -x "$old_tree/.build/release/clade" ] || [ ! -x "$old_tree/.build/release/clade-agent" ]; then
    echo "== building $commit in $old_tree (release)"
    # Its own scripts/build.sh: the flags that commit shipped with.
    (cd "$old_tree" && scripts/build.sh)
fi
old_bin=$old_tree/.build/release/clade

results=$(pwd)/.build-compare/results-$commit.jsonl
: > "$results"
run_side() {
    local label=$1 binary=$2 home
    home=$(mktemp -d /var/tmp/clade-compare-XXXXXX)
    chmod 755 "$home"
    echo "== $label: clade bench $* (store $home)" >&2
    local line
    line=$(CLADE_HOME=$home "$binary" bench "${@:3}" --json | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))')
    CLADE_HOME=$home "$binary" kill --all >/dev/null 2>&1 || true
    rm -rf "$home"
    printf '{"side": "%s", "result": %s}\n' "$label" "$line" >> "$results"
}
for round in $(seq "$rounds"); do
    run_side "$commit" "$old_bin" "$@"
    run_side "tree" "$new_bin" "$@"
done
python3 - "$results" "$commit" <<'PY'
import json, statistics, sys
path, commit = sys.argv[1], sys.argv[2]
rows = [json.loads(line) for line in open(path) if line.strip()]
def numbers(value, prefix=""):
    if isinstance(value, bool): return {}
    if isinstance(value, (int, float)): return {prefix: float(value)}
    out = {}
    if isinstance(value, dict):
        for key, item in value.items(): out.update(numbers(item, f"{prefix}.{key}" if prefix else key))
    if isinstance(value, list):
        for index, item in enumerate(value):
            name = item.get("name", index) if isinstance(item, dict) else index
            out.update(numbers(item, f"{prefix}.{name}"))
    return out
sides = {}
for row in rows: sides.setdefault(row["side"], []).append(numbers(row["result"]))
keys = sorted(set().union(*[set(r) for runs in sides.values() for r in runs]))
print(f"{'figure':50s} {commit:>14s} {'tree':>14s} {'tree/old':>9s}")
for key in keys:
    old = [r[key] for r in sides.get(commit, []) if key in r]
    new = [r[key] for r in sides.get("tree", []) if key in r]
    if not old or not new: continue
    o, n = statistics.median(old), statistics.median(new)
    ratio = f"{n / o:9.2f}" if o else "        -"
    print(f"{key:50s} {o:14.1f} {n:14.1f} {ratio}")
PY
