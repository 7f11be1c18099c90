#!/usr/bin/env bash
# The whole test suite, or its quick tier:
#   scripts/test.sh              build, then every unit and integration test (what CI runs)
#   scripts/test.sh --quick      the unit tests plus one VM test per capability
#   scripts/test.sh --filter X   build, then `swift test --filter X` as before
#
# One release build (-enable-testing) holds both the binaries the integration tests drive and
# the test bundle (scripts/build.sh --tests). The tests then run from that bundle, one job per
# integration suite, two jobs at a time: a TCG guest keeps a core busy only while it boots or
# computes, so one suite's VMs are mostly idle on the other's turn. The isolation suites, which
# measure their neighbours' latency and read host-wide state (the firewall), run last, beside
# each other only.
# The run ends with each job's wall time, slowest first, the build time and the total.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
quick=0
if [ "${1:-}" = "--quick" ]; then quick=1; shift; fi

report=$(mktemp -d "${TMPDIR:-/tmp}/clade-test-report.XXXXXX")
timings="$report/timings"
: > "$timings"
elapsed() { echo $(( $(date +%s) - $1 )); }
# How busy the cores were over a phase, from /proc/stat: "busy total" jiffies now (user to steal;
# guest time is already inside user), then the share since such a reading, noted in $report/cpu.
cpu_jiffies() { awk '/^cpu / { total = 0; for (i = 2; i <= 9; i++) total += $i; print total - $5 - $6, total }' /proc/stat; }
note_cpu() {
    local busy0 total0 busy1 total1
    read -r busy0 total0 <<< "$2"
    read -r busy1 total1 <<< "$(cpu_jiffies)"
    echo "cores busy during $1: $(( 100 * (busy1 - busy0) / (total1 - total0 + 1) ))% of $(nproc)" >> "$report/cpu"
}

phase_start=$(date +%s)
phase_cpu=$(cpu_jiffies)
# Other people's clients, pinned, from PyPI: the contract tests drive clade with them. They are
# installed beside the build, at low priority (pip mostly waits on the index and the disk).
(
    set +e
    nice -n 19 scripts/python-clients.sh > "$report/python-clients.log" 2>&1
    echo $? > "$report/python-clients.rc"
    printf '%s\t%s\t%s\n' "$(elapsed "$phase_start")" "python clients (beside the build)" "-" >> "$timings"
) &
clients=$!
scripts/build.sh --tests
printf '%s\t%s\t%s\n' "$(elapsed "$phase_start")" "build" "-" >> "$timings"
note_cpu "the build" "$phase_cpu"
wait "$clients"
cat "$report/python-clients.log"
if [ "$(cat "$report/python-clients.rc")" != 0 ]; then echo "installing the Python clients failed (above)" >&2; exit 1; fi

if [ $# -gt 0 ]; then
    exec swift test -c release -Xswiftc -enable-testing --skip-build --no-parallel "$@"
fi

bundle=.build/release/cladePackageTests.xctest
# How many tests each job may run at once: 1, except the unit targets, which need no VM.
jobs=${CLADE_TEST_JOBS:-2}
# The isolation suites run after the others, side by side: they compare a neighbour's latency
# before and after an attack, and check host-wide state (firewall rules, control groups) that
# other suites change. Root's suite and the unprivileged user's change none of each other's
# (the unprivileged clade writes no firewall rule; each has its own peer network), and alone
# each kept only half of the two cores busy.
exclusive='^IntegrationTests\.(IsolationIntegrationTests|UnprivilegedIsolationTests)$'
# One VM test per capability, for --quick.
quick_tests=(
    'IntegrationTests.ColdBootTests/bootExecFilesAndKillLeaveNothingBehind'
    'IntegrationTests.SnapshotForkTests/siblingsGetTheirOwnIdentityAndSeeOnlyTheirOwnWrites'
    'IntegrationTests.BranchTests/diffBranchCarriesMemoryAndDiskAndLeavesEverythingElseAlone'
    'IntegrationTests.StandbyTests/'
    'IntegrationTests.PackTransferTests/aSnapshotForksInAnEmptyStoreAtAnotherPathAfterTheSourceIsGone'
    'IntegrationTests.DaemonTests/everythingThroughHTTPOnly'
    'IntegrationTests.E2BTests/'
    'IntegrationTests.AgentOnHostTests/'
)
# ... and the isolation one, alone after the others as in the full run.
quick_exclusive='IntegrationTests.IsolationIntegrationTests/aHostileGuestReachesNothingOnTheHostAndTakesOnlyItsShare'

"$bundle" --testing-library swift-testing --list-tests 2>/dev/null | grep -E '^[A-Za-z]+Tests\.' > "$report/all-tests"
unit_filter='^(CladeCLITests|CladeStoreTests|CladeModelTests|CladeQEMUTests|CladeEngineTests|CladeGuestTests|CladePackTests|CladeServerTests|CladeShimTests)\.'
suites=$(grep '^IntegrationTests\.' "$report/all-tests" | cut -d/ -f1 | sort -u)

# Integration jobs, longest first by the durations recorded in scripts/test-durations (a suite
# not listed there goes first: it may be long).
order() {
    while read -r suite; do
        [ -n "$suite" ] || continue
        seconds=$(awk -v s="$suite" '$2 == s { print $1 }' scripts/test-durations 2>/dev/null || true)
        echo "${seconds:-100000} $suite"
    done | sort -rn | cut -d' ' -f2
}

# Every job's stores (each a few hundred MiB to 2 GiB: images, snapshots, forks' disks) live in
# a scratch directory of the job's own, its TMPDIR, which is emptied when the job ends: a run
# then needs the disk of its two largest concurrent jobs, not of every suite it ran.
# CLADE_TEST_KEEP_STORES=1 keeps the stores of failed jobs for a look afterwards.
# The names stay short: a store's sockets (QMP, agent) must fit in a 108-byte socket address.
stores=$(mktemp -d "${TMPDIR:-/tmp}/clade-t.XXXXXX")
# The unprivileged suites' user must reach its own store below it.
chmod 0755 "$stores"
release_stores() {
    local scratch=$1 home
    # A test that failed half-way may leave sandboxes running: their VMs hold the disks open.
    for home in "$scratch"/*/; do
        [ -d "$home/sandboxes" ] || continue
        CLADE_HOME="$home" .build/release/clade kill --all >/dev/null 2>&1 || true
    done
    # A store's lazy file servers keep their FUSE mounts for a few seconds of idle grace after
    # its last sandbox: detaching the mounts ends them, and rm then meets plain directories.
    local device mount rest
    while read -r device mount rest; do
        case "$mount" in "$scratch"/*) umount -l "$mount" 2>/dev/null || fusermount3 -uz "$mount" 2>/dev/null || true ;; esac
    done < /proc/mounts
    # A store's memory tier (snapshot memory placed in RAM, for forks the shim and the daemon
    # start) lives on /dev/shm, outside the store; its owner file names the store.
    local tier
    for tier in /dev/shm/clade-*/; do
        [ -f "$tier/store" ] || continue
        case "$(cat "$tier/store")" in "$scratch"/*) rm -rf "$tier" ;; esac
    done
    rm -rf "$scratch"
}
trap 'if [ "${CLADE_TEST_KEEP_STORES:-0}" = 1 ]; then rmdir "$stores" 2>/dev/null || true; else rm -rf "$stores"; fi' EXIT

# run_job NAME FILTER [extra arguments]: one test process; its log, result and wall time.
run_job() {
    local name=$1 filter=$2
    shift 2
    local begun log rc scratch
    begun=$(date +%s)
    log="$report/${name//\//_}.log"
    scratch=$(mktemp -d "$stores/XXXX")
    chmod 1777 "$scratch"
    set +e
    TMPDIR="$scratch" "$bundle" --testing-library swift-testing --filter "$filter" --xunit-output "$report/${name//\//_}.xml" "$@" > "$log" 2>&1
    rc=$?
    set -e
    if [ "$rc" = 0 ] || [ "${CLADE_TEST_KEEP_STORES:-0}" != 1 ]; then
        release_stores "$scratch"
    else
        echo "kept the stores of $name in $scratch (CLADE_TEST_KEEP_STORES=1)" >> "$log"
    fi
    printf '%s\t%s\t%s\n' "$(elapsed "$begun")" "$name" "$rc" >> "$timings"
    flock "$report/print.lock" sh -c 'echo "== $1 (exit $2, $3 s)"; cat "$4"' print "$name" "$rc" "$(elapsed "$begun")" "$log"
}

pending=()
if [ $quick = 1 ]; then
    pending+=("unit-tests")
    for test in "${quick_tests[@]}"; do pending+=("${test%/}"); done
else
    pending+=("unit-tests")
    while read -r suite; do
        if ! echo "$suite" | grep -Eq "$exclusive"; then pending+=("$suite"); fi
    done < <(echo "$suites" | order)
fi

filter_for() {
    case $1 in
        unit-tests) echo "$unit_filter" ;;
        # A test's name ends at its argument list, whatever arguments it takes.
        */*) echo "^$(echo "$1" | sed 's/[.]/\\./g')\\(" ;;
        *) echo "^$(echo "$1" | sed 's/[.]/\\./g')(/|$)" ;;
    esac
}

phase_cpu=$(cpu_jiffies)
for name in "${pending[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    if [ "$name" = unit-tests ]; then
        run_job "$name" "$(filter_for "$name")" &
    else
        run_job "$name" "$(filter_for "$name")" --no-parallel &
    fi
done
wait
note_cpu "the jobs run two at a time" "$phase_cpu"
phase_cpu=$(cpu_jiffies)
if [ $quick = 0 ]; then
    while read -r suite; do
        if echo "$suite" | grep -Eq "$exclusive"; then run_job "$suite" "$(filter_for "$suite")" --no-parallel & fi
    done <<< "$suites"
    wait
    note_cpu "the isolation suites" "$phase_cpu"
elif [ "$(id -u)" = 0 ]; then
    run_job "$quick_exclusive" "$(filter_for "$quick_exclusive")" --no-parallel
fi

# Counts from every job's xUnit report; a job that ran no test is a failure (a renamed suite).
summary=$(python3 - "$report" "$timings" <<'PY'
import glob, os, sys, xml.etree.ElementTree as ET
report, timings = sys.argv[1], sys.argv[2]
passed = failed = skipped = 0
empty = []
for path in sorted(glob.glob(os.path.join(report, "*.xml"))):
    cases = ET.parse(path).getroot().iter("testcase")
    count = 0
    for case in cases:
        count += 1
        if case.find("failure") is not None or case.find("error") is not None: failed += 1
        elif case.find("skipped") is not None: skipped += 1
        else: passed += 1
    if count == 0: empty.append(os.path.basename(path)[:-4])
rows = [line.rstrip("\n").split("\t") for line in open(timings) if line.strip()]
bad = [r[1] for r in rows if r[2] not in ("-", "0")]
print("\n== where the time went (wall seconds, slowest first)")
for seconds, name, status in sorted(rows, key=lambda r: -int(r[0])):
    mark = "" if status in ("-", "0") else f"   FAILED (exit {status})"
    print(f"{int(seconds):6d}  {name}{mark}")
for name in empty: print(f"job {name} ran no test")
print(f"FAILED JOBS: {' '.join(bad + empty)}" if bad or empty else "all jobs passed")
print(f"tests: {passed} passed, {failed + len(empty)} failed, {skipped} skipped")
PY
)
total=$(elapsed "$started")
# The counts come last: CI reads the closing line.
echo "$summary" | grep -v '^tests: '
cat "$report/cpu"
echo "total: ${total}s ($(( total / 60 ))m$(( total % 60 ))s)"
echo "$summary" | grep '^tests: '
echo "$summary" | grep -q '^all jobs passed$'
