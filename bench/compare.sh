#!/usr/bin/env bash
# One-command comparison (issue 8): Debian's redis-server, rcodis-server, and a two-group
# rcodis cluster behind rcodis-proxy (`rcodis-ctl up`), all on loopback, driven in
# alternation by rcodis-bench (SET:GET 1:10 and 1:1) and redis-benchmark (SET and GET), with
# 32 B and 1 KiB values at pipeline 1 and 16, 50 clients. Prints a markdown table:
# throughput, p50/p99/p99.9 latency (ms), CPU seconds per million requests of the target's
# processes (/proc utime+stime; the cluster counts proxy + servers, proxy alone in
# brackets), and the ratio of throughput to redis-server's in the same row.
#
#   bash bench/compare.sh            TEST_TIME=5 (seconds per rcodis-bench run)
#   THREADS=1 (per rcodis-server / proxy)   QUICK=1 (pipeline 16 and 32 B only)
set -euo pipefail
cd "$(dirname "$0")/.."
test_time="${TEST_TIME:-5}"
threads="${THREADS:-1}"
cargo build --release --quiet --bins
rel=$PWD/target/release
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ping() { for _ in $(seq 600); do [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0; sleep 0.05; done; echo "nothing answers on $1" >&2; exit 1; }
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
hz=$(getconf CLK_TCK)

p_redis=$(free_port); mkdir "$tmp/redis"
redis-server --port "$p_redis" --save '' --appendonly no --dir "$tmp/redis" >"$tmp/redis.log" 2>&1 & pids+=($!); redis_pids="$!"
p_rcodis=$(free_port); mkdir "$tmp/rcodis"
"$rel/rcodis-server" --port "$p_rcodis" --threads "$threads" --dir "$tmp/rcodis" >"$tmp/rcodis.log" 2>&1 & pids+=($!); rcodis_pids="$!"
p_proxy=$(free_port)
"$rel/rcodis-ctl" up --dir "$tmp/cluster" --port "$p_proxy" --groups 2 --threads "$threads" >"$tmp/cluster.log" 2>&1 & ctl=$!; pids+=($ctl)
wait_ping "$p_redis"; wait_ping "$p_rcodis"; wait_ping "$p_proxy"
proxy_pid=$(pgrep -P "$ctl" -f rcodis-proxy | head -1)
cluster_pids="$(pgrep -P "$ctl" | tr '\n' ' ')"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F)"
echo "targets: redis-server $(redis-server --version | awk '{print $3}' | cut -d= -f2); rcodis-server --threads $threads; cluster = rcodis-proxy --threads $threads + 2 rcodis-server --threads $threads"
echo "rcodis-bench: --threads 2 --clients 25 --test-time $test_time --key-maximum 100000 --prefill; redis-benchmark: -c 50 -r 100000 -t set,get"
echo
echo "| tool | workload | target | ops/s | vs redis | p50 | p99 | p99.9 | CPU s / 1M req |"
echo "|---|---|---|---|---|---|---|---|---|"

pipes="1 16"; sizes="32 1024"
[ -n "${QUICK:-}" ] && { pipes=16; sizes=32; }
declare -A port=([redis]=$p_redis [rcodis]=$p_rcodis [cluster]=$p_proxy)
declare -A procs=([redis]="$redis_pids" [rcodis]="$rcodis_pids" [cluster]="$cluster_pids")
for size in $sizes; do
  for target in redis rcodis cluster; do
    "$rel/rcodis-bench" --port "${port[$target]}" --threads 2 --clients 25 --key-maximum 100000 \
      --data-size "$size" --prefill --requests 0 --hide-histogram >/dev/null 2>&1 || true
  done
  for pipe in $pipes; do
    for ratio in 1:10 1:1; do
      declare -A base=()
      for target in redis rcodis cluster; do
        t0=$(ticks ${procs[$target]}); p0=$(ticks "$proxy_pid")
        "$rel/rcodis-bench" --port "${port[$target]}" --threads 2 --clients 25 --pipeline "$pipe" \
          --ratio "$ratio" --data-size "$size" --key-maximum 100000 --test-time "$test_time" \
          --hide-histogram --json-out-file "$tmp/out.json" >/dev/null
        t1=$(ticks ${procs[$target]}); p1=$(ticks "$proxy_pid")
        read -r ops count p50 p99 p999 < <(python3 -c '
import json,sys; t=json.load(open(sys.argv[1]))["ALL STATS"]["Totals"]; p=t["Percentile Latencies"]
print("%.0f %d %.3f %.3f %.3f" % (t["Ops/sec"], t["Count"], p["p50.00"], p["p99.00"], p["p99.90"]))' "$tmp/out.json")
        cpu=$(echo "($t1-$t0)/$hz/($count/1000000)" | bc -l)
        extra=""; [ $target = cluster ] && extra=" ($(printf %.2f "$(echo "($p1-$p0)/$hz/($count/1000000)" | bc -l)"))"
        [ $target = redis ] && base[x]=$ops
        printf '| rcodis-bench | %s %sB P%s | %s | %s | %.2f | %s | %s | %s | %.2f%s |\n' "$ratio" "$size" "$pipe" "$target" "$ops" \
          "$(echo "$ops/${base[x]}" | bc -l)" "$p50" "$p99" "$p999" "$cpu" "$extra"
      done
      unset base
    done
    for test in set get; do
      n=$(( pipe == 1 ? 200000 : 1000000 ))
      declare -A base=()
      for target in redis rcodis cluster; do
        t0=$(ticks ${procs[$target]}); p0=$(ticks "$proxy_pid")
        line=$(redis-benchmark -p "${port[$target]}" -c 50 -P "$pipe" -d "$size" -r 100000 -n "$n" -t "$test" --csv 2>/dev/null | tail -1)
        t1=$(ticks ${procs[$target]}); p1=$(ticks "$proxy_pid")
        # "test","rps","avg","min","p50","p95","p99","max"
        IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"$(echo "$line" | tr -d '"')"
        cpu=$(echo "($t1-$t0)/$hz/($n/1000000)" | bc -l)
        extra=""; [ $target = cluster ] && extra=" ($(printf %.2f "$(echo "($p1-$p0)/$hz/($n/1000000)" | bc -l)"))"
        [ $target = redis ] && base[x]=$rps
        printf '| redis-benchmark | %s %sB P%s | %s | %.0f | %.2f | %s | %s | - | %.2f%s |\n' "${test^^}" "$size" "$pipe" "$target" "$rps" \
          "$(echo "$rps/${base[x]}" | bc -l)" "$p50" "$p99" "$cpu" "$extra"
      done
      unset base
    done
  done
done
