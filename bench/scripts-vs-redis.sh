#!/usr/bin/env bash
# Scripts and functions: rcodis-server --threads 1 versus Debian's redis-server, side by side,
# alternating. A one-INCR function (FCALL), the same as a cached script (EVALSHA), and a plain
# INCR for scale; redis-benchmark throughput and the server's CPU per call (utime+stime from
# /proc/PID/stat around each run).
#
#   bash bench/scripts-vs-redis.sh [rounds]        (default 3 rounds)
# Environment: BENCH_ARGS overrides redis-benchmark's arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
args="${BENCH_ARGS:--c 50 -P 16 -n 300000 -q}"
cargo build --release --quiet --bin rcodis-server
bin=target/release/rcodis-server
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ping() { for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "server on $1 did not start" >&2; exit 1; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

rport=$(free_port)
redis-server --port "$rport" --save "" --appendonly no >"$tmp/redis.log" 2>&1 &
rpid=$!; pids+=($rpid)
oport=$(free_port)
mkdir -p "$tmp/data"
"$bin" --port "$oport" --threads 1 --dir "$tmp/data" >"$tmp/rcodis.log" 2>&1 &
opid=$!; pids+=($opid)
wait_ping "$rport"; wait_ping "$oport"

lib='#!lua name=bench
redis.register_function("inc", function(keys) return redis.call("incr", keys[1]) end)'
script='return redis.call("incr", KEYS[1])'
for p in "$rport" "$oport"; do
  redis-cli -p "$p" function load "$lib" >/dev/null
  redis-cli -p "$p" script load "$script" >/dev/null
done
sha=$(redis-cli -p "$rport" script load "$script")
hz=$(getconf CLK_TCK)

echo "| round | server | command | calls/s | server CPU µs/call |"
echo "|---|---|---|---|---|"
for round in $(seq "$rounds"); do
  for target in redis-server rcodis-server; do
    if [ "$target" = redis-server ]; then port=$rport; pid=$rpid; else port=$oport; pid=$opid; fi
    for cmd in "fcall inc 1 k" "evalsha $sha 1 k" "incr k"; do
      n=$(echo "$args" | sed -n 's/.*-n \([0-9]*\).*/\1/p')
      c0=$(cpu_ticks "$pid")
      # shellcheck disable=SC2086
      rate=$(redis-benchmark -p "$port" $args $cmd 2>/dev/null | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1)
      c1=$(cpu_ticks "$pid")
      us=$(echo "scale=3; ($c1 - $c0) * 1000000 / $hz / $n" | bc)
      echo "| $round | $target | ${cmd%% *} | $rate | $us |"
    done
  done
done
