#!/usr/bin/env bash
# Rebalance benchmark (issue 7): a local cluster (`rcodis-ctl up`, 2 groups, 1 proxy) with
# every slot on group 1 and N small keys (default 1,000,000) loaded through the proxy;
# `rcodis-ctl rebalance` then moves 512 slots to group 2 while rcodis-bench reads through
# the proxy. Prints the rebalance time and the GETs' p50/p99/p99.9 during it versus idle.
#
#   bash bench/rebalance.sh [keys]
set -euo pipefail
cd "$(dirname "$0")/.."
keys="${1:-1000000}"
cargo build --release --quiet --bins
rel=$PWD/target/release
tmp=$(mktemp -d)
ctl_pid=
cleanup() { [ -n "$ctl_pid" ] && kill "$ctl_pid" 2>/dev/null && wait "$ctl_pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$rel/rcodis-ctl" up --dir "$tmp/c" --port "$port" --groups 2 >"$tmp/up.log" 2>&1 & ctl_pid=$!
for _ in $(seq 600); do [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break; sleep 0.05; done
C="--coordinator=file://$tmp/c/coordinator"
# Every slot to group 1 while empty, then load.
"$rel/rcodis-ctl" slot migrate 512-1023 --to 1 --parallel 64 $C >/dev/null 2>&1
"$rel/rcodis-bench" -p "$port" --threads 2 --clients 4 --key-maximum $((keys - 1)) --data-size 16 \
  --prefill --requests 0 --hide-histogram >/dev/null
n=$(redis-cli -p "$port" dbsize)
lat() { # seconds -> "p50 / p99 / p99.9 ms" of GETs through the proxy
  "$rel/rcodis-bench" -p "$port" --threads 1 --clients 8 --ratio 0:1 --key-maximum $((keys - 1)) \
    --test-time "$1" --hide-histogram --json-out-file "$tmp/lat.json" >/dev/null
  python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["ALL STATS"]["Gets"]["Percentile Latencies"]; print("%.3f / %.3f / %.3f" % (p["p50.00"], p["p99.00"], p["p99.90"]))' "$tmp/lat.json"
}
idle=$(lat 5)
"$rel/rcodis-bench" -p "$port" --threads 1 --clients 8 --ratio 0:1 --key-maximum $((keys - 1)) \
  --test-time 3600 --hide-histogram --json-out-file "$tmp/during.json" >/dev/null & bench=$!
sleep 1
t0=$(date +%s.%N)
"$rel/rcodis-ctl" rebalance --parallel 16 $C >"$tmp/rebalance.log" 2>&1
t1=$(date +%s.%N)
kill -INT $bench 2>/dev/null || true; wait $bench 2>/dev/null || true
during=$(python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["ALL STATS"]["Gets"]["Percentile Latencies"]; print("%.3f / %.3f / %.3f" % (p["p50.00"], p["p99.00"], p["p99.90"]))' "$tmp/during.json" 2>/dev/null || echo "n/a")
m=$(redis-cli -p "$port" dbsize)
[ "$n" = "$m" ] || { echo "keys before $n, after $m" >&2; exit 1; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $n keys"
echo "| what | value |"
echo "|---|---|"
echo "| rebalance 512 slots, 1 group -> 2 | $(printf %.1f "$(echo "$t1-$t0" | bc -l)") s |"
echo "| GET p50 / p99 / p99.9 ms idle | $idle |"
echo "| GET p50 / p99 / p99.9 ms during | $during |"
