#!/usr/bin/env bash
# E2B's own Python SDK suite against clade, run by hand (CI cannot reach GitHub, and the project
# does not copy E2B's code): a checkout of e2b-dev/E2B, its tests unmodified.
#   scripts/e2b-suite.sh PATH/TO/E2B [PYTEST ARGUMENTS...]
# (without a test named: tests/sync/sandbox_sync tests/sync/api_sync). Needs root: port 443,
# network namespaces, host routes. Sets up, for this run only (removed at the end but the store):
# - `clade serve` with the E2B listener over HTTPS on port 443 of 127.0.9.1, for *.clade.test,
#   so the SDK runs configured as against E2B itself: E2B_DOMAIN and its API key, nothing else;
# - a resolver (dnsmasq) in the suite's own mount namespace answering every name under it;
# - a stand-in for the public endpoints the suite names: a network namespace holding 1.1.1.1 and
#   8.8.8.8 (host routes point there while it runs) that serves HTTPS (scripts/internet-standin.py)
#   and DNS (connectivitycheck.gstatic.com; names under the E2B domain get an address beyond the
#   host, whose connections the egress proxy sends to clade's own listener); the daemon runs in a
#   mount namespace whose resolv.conf names 8.8.8.8, so its guests' DNS goes there too;
# - the `httpbin` template the network tests name (`clade e2b init --template httpbin`);
# - one test authority for all of it, which the store's `base` template trusts, and 8.8.8.8 as
#   that template's resolver, as in E2B's sandboxes (both baked in; the template is otherwise
#   `clade e2b init`'s).
# E2B_SDK_VERSION picks the SDK from PyPI (default 2.63.0); CLADE_E2B_SUITE_DIR the work folder.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "scripts/e2b-suite.sh needs root (port 443, network namespaces, host routes)" >&2; exit 1; }
[ $# -ge 1 ] || { echo "usage: scripts/e2b-suite.sh PATH/TO/e2b-dev/E2B [PYTEST ARGUMENTS...]" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
checkout=$(cd "$1" && pwd)
shift
[ -d "$checkout/packages/python-sdk/tests" ] || { echo "$checkout is not a checkout of e2b-dev/E2B (no packages/python-sdk/tests)" >&2; exit 2; }
work=${CLADE_E2B_SUITE_DIR:-/var/tmp/clade-e2b-suite}
clade=$here/.build/release/clade
[ -x "$clade" ] || { echo "build clade first: scripts/build.sh" >&2; exit 2; }
export SUITE_DOMAIN=clade.test SUITE_EDGE=127.0.9.1 SUITE_RESOLVER=127.53.9.1
namespace=clade-internet
store=$work/store
mkdir -p "$store"
chmod 755 "$work" "$store"
command -v dnsmasq >/dev/null || apt-get install -y -qq --no-install-recommends dnsmasq-base >/dev/null

if [ ! -f "$work/internet.pem" ]; then
    echo "== a test authority, and certificates for *.$SUITE_DOMAIN and the stand-in endpoints"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/ca.key" -out "$work/ca.pem" -days 30 -subj "/CN=clade e2b-suite authority" 2>/dev/null
    issue() {
        openssl req -newkey rsa:2048 -nodes -keyout "$work/$1.key" -out "$work/$1.csr" -subj "/CN=$1" 2>/dev/null
        printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$2" >"$work/$1.ext"
        openssl x509 -req -in "$work/$1.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -out "$work/$1.pem" -days 30 -extfile "$work/$1.ext" 2>/dev/null
    }
    issue edge "DNS:*.$SUITE_DOMAIN"
    issue internet "IP:1.1.1.1,IP:8.8.8.8,DNS:connectivitycheck.gstatic.com"
fi

venv=$work/venv
if [ ! -x "$venv/bin/pytest" ]; then
    echo "== the SDK (e2b ${E2B_SDK_VERSION:-2.63.0}) and the suite's test dependencies, from PyPI"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "e2b==${E2B_SDK_VERSION:-2.63.0}" "pytest>=9.0.3,<10" "pytest-xdist>=3.3.1,<4" \
        "python-dotenv>=1.0.0,<2" "pytest-dotenv>=0.5.2,<0.6" "pytest-asyncio>=1.3.0,<2" "pytest-timeout>=2.4.0,<3"
fi
# The tests and their pytest settings, without the tree's own e2b package beside them, so they
# import the released SDK.
rm -rf "$work/sdk"
mkdir -p "$work/sdk"
cp -r "$checkout/packages/python-sdk/tests" "$checkout/packages/python-sdk/pytest.ini" "$work/sdk/"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip route del 1.1.1.1/32 2>/dev/null || true
    ip route del 8.8.8.8/32 2>/dev/null || true
    ip netns del "$namespace" 2>/dev/null || true
}
trap cleanup EXIT

echo "== the stand-in endpoints: 1.1.1.1 and 8.8.8.8 in network namespace $namespace"
ip netns del "$namespace" 2>/dev/null || true
ip netns add "$namespace"
ip link add clade-inet0 type veth peer name clade-inet1
ip link set clade-inet1 netns "$namespace"
ip addr add 10.231.10.1/30 dev clade-inet0
ip link set clade-inet0 up
ip netns exec "$namespace" sh -c 'ip link set lo up && ip addr add 10.231.10.2/30 dev clade-inet1 && ip link set clade-inet1 up &&
    ip addr add 1.1.1.1/32 dev lo && ip addr add 8.8.8.8/32 dev lo && ip route add default via 10.231.10.1'
ip route replace 1.1.1.1/32 via 10.231.10.2
ip route replace 8.8.8.8/32 via 10.231.10.2
ip netns exec "$namespace" python3 "$here/scripts/internet-standin.py" "$work/internet.pem" "$work/internet.key" 1.1.1.1 8.8.8.8 >"$work/standin.out" 2>&1 &
pids+=($!)
ip netns exec "$namespace" dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces --listen-address=8.8.8.8 \
    --address=/connectivitycheck.gstatic.com/1.1.1.1 --address="/$SUITE_DOMAIN/198.51.100.80" --user=root 2>"$work/standin-dns.log" &
pids+=($!)
until grep -q ready "$work/standin.out" 2>/dev/null; do sleep 0.1; done

if [ ! -f "$work/base-trusts-authority" ]; then
    echo "== the base template, trusting the test authority and resolving through 8.8.8.8"
    "$clade" e2b init --home "$store" >"$work/bake.log" 2>&1
    "$clade" rmi --home "$store" base >/dev/null
    "$clade" bake --home "$store" --image base --memory 512 --tag base --warm-user root \
        --warm "printf '%s\n' '$(cat "$work/ca.pem")' >/usr/local/share/ca-certificates/clade-e2b-suite.crt && update-ca-certificates >/dev/null && echo 'nameserver 8.8.8.8' >/etc/resolv.conf" >"$work/bake.log" 2>&1
    "$clade" rmi --home "$store" httpbin >/dev/null 2>&1 || true
    touch "$work/base-trusts-authority"
fi
if ! "$clade" snapshots --home "$store" | grep -q "^httpbin "; then
    echo "== the httpbin template"
    "$clade" e2b init --home "$store" --template httpbin >>"$work/bake.log" 2>&1
fi

echo "== clade serve: https://api.$SUITE_DOMAIN on $SUITE_EDGE:443"
echo "nameserver 8.8.8.8" >"$work/daemon-resolv.conf"
# SSL_CERT_FILE: the egress proxy verifies the hosts it connects to (the listener here) with the test authority.
SSL_CERT_FILE=$work/ca.pem unshare --mount sh -c 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"' sh "$work/daemon-resolv.conf" \
    "$clade" serve --home "$store" --listen none --e2b-listen "$SUITE_EDGE:443" --e2b-domain "$SUITE_DOMAIN" \
    --e2b-tls-cert "$work/edge.pem" --e2b-tls-key "$work/edge.key" --egress-proxy-port 18081 >"$work/daemon.log" 2>&1 &
daemon=$!
pids+=($daemon)
until curl -sf --cacert "$work/ca.pem" --resolve "api.$SUITE_DOMAIN:443:$SUITE_EDGE" "https://api.$SUITE_DOMAIN/health" >/dev/null; do
    kill -0 "$daemon" 2>/dev/null || { echo "clade serve exited; see $work/daemon.log" >&2; exit 1; }
    sleep 0.2
done

named_tests=0
for argument in "$@"; do case $argument in -*) ;; *) named_tests=1 ;; esac; done
[ "$named_tests" = 1 ] || set -- "$@" tests/sync/sandbox_sync tests/sync/api_sync
echo "== E2B's suite: pytest $*"
echo "nameserver $SUITE_RESOLVER" >"$work/client-resolv.conf"
export SUITE_KEY SUITE_WORK=$work SUITE_VENV=$venv
SUITE_KEY=$(head -n1 "$store/state/e2b/api-keys")
cd "$work/sdk"
set +e
unshare --mount sh -c '
    mount --bind "$SUITE_WORK/client-resolv.conf" /etc/resolv.conf
    dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces --listen-address="$SUITE_RESOLVER" \
        --address="/$SUITE_DOMAIN/$SUITE_EDGE" --user=root &
    resolver=$!
    trap "kill $resolver" EXIT
    trap "exit 143" TERM INT
    until getent hosts "api.$SUITE_DOMAIN" >/dev/null; do sleep 0.05; done
    env -i PATH="$PATH" HOME="$HOME" E2B_DOMAIN="$SUITE_DOMAIN" E2B_API_KEY="$SUITE_KEY" SSL_CERT_FILE="$SUITE_WORK/ca.pem" \
        "$SUITE_VENV/bin/python" -m pytest -p no:cacheprovider -o timeout=180 -rf "$@"
' sh "$@"
status=$?
echo "== pytest exited $status; the daemon's log: $work/daemon.log"
exit $status
