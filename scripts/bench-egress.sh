#!/bin/bash
# What the egress proxy adds to a connection: the same HTTP fetch from one fork, to an address
# its policy admits (direct, no proxy) and by a host name only the proxy admits (proxied), N
# times each, side by side in one run, as median wall ms of `clade exec` (whose own cost, shown
# as `exec true`, is in both). Needs root (a network namespace plays the host beyond).
#   scripts/bench-egress.sh STORE SNAPSHOT_TAG      (a snapshot of the default busybox image)
set -u
[ $# = 2 ] || { echo "usage: $0 STORE SNAPSHOT_TAG" >&2; exit 2; }
C="$(cd "$(dirname "$0")/.." && pwd)/.build/release/clade"; H=$1; TAG=$2; N=${N:-15}
ip netns add cladeprobe; ip link add cladepb0 type veth peer name cladepb1; ip link set cladepb1 netns cladeprobe
ip addr add 10.231.10.1/29 dev cladepb0; ip link set cladepb0 up
ip netns exec cladeprobe ip addr add 10.231.10.2/29 dev cladepb1; ip netns exec cladeprobe ip addr add 10.231.10.3/29 dev cladepb1
ip netns exec cladeprobe ip link set cladepb1 up; ip netns exec cladeprobe ip link set lo up
WWW=$(mktemp -d); echo hello > $WWW/index.html
(cd $WWW && exec ip netns exec cladeprobe python3 -m http.server 80 >/dev/null 2>&1) & SRV=$!
$C serve --home $H --listen 127.0.0.1:18889 --egress-proxy-port 21555 --egress-resolve peer.test=10.231.10.3 > "$H/egress-bench-daemon.log" 2>&1 & D=$!
for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18889/healthz && break; sleep 0.2; done
ID=$(curl -s -X POST http://127.0.0.1:18889/v1/sandboxes -d '{"snapshot_tag":"'"$TAG"'","network":"deny:0.0.0.0/0;allow:10.231.10.3,peer.test"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
$C exec --home $H $ID --user root -- sh -c "ip route add default via 10.0.2.2 2>/dev/null || route add default gw 10.0.2.2 2>/dev/null || true"
fetch() { $C exec --home $H $ID -- sh -c "printf 'GET /index.html HTTP/1.0\r\nHost: $2\r\n\r\n' | nc $1 80 | tail -1"; }
echo "direct: $(fetch 10.231.10.3 x)  proxied: $(fetch 10.231.10.2 peer.test)  refused: $(fetch 10.231.10.2 other.test)"
measure() { for i in $(seq $N); do s=$(date +%s%N); fetch $1 $2 >/dev/null; e=$(date +%s%N); echo $(( (e-s)/1000000 )); done | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for round in 1 2; do echo "round $round: direct $(measure 10.231.10.3 x) ms, proxied $(measure 10.231.10.2 peer.test) ms, exec true $( for i in $(seq $N); do s=$(date +%s%N); $C exec --home $H $ID -- true; e=$(date +%s%N); echo $(( (e-s)/1000000 )); done | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') ms"; done
$C kill --home $H $ID >/dev/null; kill $D; kill $SRV; wait 2>/dev/null
ip link del cladepb0; ip netns del cladeprobe; rm -rf $WWW
