#!/usr/bin/env bash
# rcodis-server versus Debian's redis-server, side by side in one run, alternating.
# For each target: redis-benchmark throughput per test and the server process's CPU time
# per million requests (utime+stime from /proc/PID/stat around each run).
#
#   bash bench/server-vs-redis.sh [rounds]        (default 2 rounds)
# Environment: BENCH_ARGS overrides redis-benchmark's arguments; REDIS_ARGS and RCODIS_ARGS
# add server arguments (e.g. "--appendonly yes --appendfsync always"); ONLY=1 skips the
# two-shard rcodis run.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-2}"
args="${BENCH_ARGS:--P 16 -t set,get -d 32 -r 100000 -n 2000000 -q}"
cargo build --release --quiet --bin rcodis-server
bin=target/release/rcodis-server
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ping() { for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "server on $1 did not start" >&2; exit 1; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

start() { # name port cmd...
  local name=$1 port=$2; shift 2
  "$@" >"$tmp/$name.log" 2>&1 &
  pids+=($!); echo $! >"$tmp/$name.pid"; wait_ping "$port"
}

# shellcheck disable=SC2086
p_redis=$(free_port); mkdir -p "$tmp/redis"; start redis "$p_redis" redis-server --port "$p_redis" --save '' --appendonly no --dir "$tmp/redis" ${REDIS_ARGS:-}
# shellcheck disable=SC2086
p_r1=$(free_port); mkdir -p "$tmp/r1"; start rcodis1 "$p_r1" "$bin" --port "$p_r1" --threads 1 --dir "$tmp/r1" ${RCODIS_ARGS:-}
# shellcheck disable=SC2086
p_r2=$(free_port); mkdir -p "$tmp/r2"; start rcodis2 "$p_r2" "$bin" --port "$p_r2" --threads 2 --dir "$tmp/r2" ${RCODIS_ARGS:-}
hz=$(getconf CLK_TCK)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "redis-benchmark $args"
echo
printf "| round | server | test | requests/s | server CPU s per 1M requests |\n|---|---|---|---|---|\n"
for r in $(seq "$rounds"); do
  targets="redis rcodis1 rcodis2"; [ -n "${ONLY:-}" ] && targets="redis rcodis1"
  for target in $targets; do
    case $target in redis) port=$p_redis;; rcodis1) port=$p_r1;; rcodis2) port=$p_r2;; esac
    pid=$(cat "$tmp/$target.pid")
    redis-cli -p "$port" flushall >/dev/null
    before=$(cpu_ticks "$pid")
    # shellcheck disable=SC2086
    out=$(redis-benchmark -p "$port" $args 2>/dev/null | tr '\r' '\n' | grep -E '^[A-Z]+: [0-9.]+ requests per second' || true)
    after=$(cpu_ticks "$pid")
    total=0
    while read -r line; do
      [ -z "$line" ] && continue
      name=${line%%:*}; rps=$(echo "$line" | awk '{print $2}')
      printf "| %s | %s | %s | %s | |\n" "$r" "$target" "$name" "$rps"
    done <<<"$out"
    n=$(echo "$args" | sed -E 's/.*-n ([0-9]+).*/\1/'); tests=$(echo "$out" | grep -c . || true)
    reqs=$((n * tests))
    cpu=$(python3 -c "print(f'{($after-$before)/$hz/($reqs/1e6):.3f}')")
    printf "| %s | %s | all | | %s |\n" "$r" "$target" "$cpu"
  done
done
