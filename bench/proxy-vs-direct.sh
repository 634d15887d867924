#!/usr/bin/env bash
# rcodis-proxy in front of two rcodis-servers versus one rcodis-server directly, side by
# side, alternating; redis-benchmark and rcodis-bench throughput, and the proxy's CPU per
# request (/proc).
# With Debian's nutcracker installed, twemproxy in front of the same servers too (a reference).
#   bash bench/proxy-vs-direct.sh [rounds]
# SCHED_BATCH=1 runs every rcodis process (the direct server too) with --sched-batch, as
# `rcodis-ctl up` does. BACKEND=redis puts Debian's redis-server in place of both
# rcodis-servers (the direct target too), as proxies are usually measured.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-2}"
cargo build --release --quiet --bins
tmp=$(mktemp -d); pids=()
sb=(); [ "${SCHED_BATCH:-0}" = 1 ] && sb=(--sched-batch)
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ping() { for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "nothing on $1" >&2; exit 1; }
backend() {
  if [ "${BACKEND:-rcodis}" = redis ]; then
    redis-server --port "$1" --save "" --appendonly no --dir "$tmp" >/dev/null 2>&1 &
  else
    target/release/rcodis-server --port "$1" --threads 1 "${sb[@]}" --dir "$tmp" >/dev/null 2>&1 &
  fi
  pids+=($!)
  wait_ping "$1"
}
s1=$(free_port); backend "$s1"
s2=$(free_port); backend "$s2"
python3 - "$tmp/topo.json" "$s1" "$s2" <<'PY'
import json, sys
path, a, b = sys.argv[1], sys.argv[2], sys.argv[3]
t = {"epoch": 1, "groups": {"1": {"id": 1, "servers": [f"127.0.0.1:{a}"]}, "2": {"id": 2, "servers": [f"127.0.0.1:{b}"]}},
     "slots": [{"id": i, "group": 1 if i < 512 else 2} for i in range(1024)], "proxies": {}}
json.dump(t, open(path, "w"))
PY
pp=$(free_port); target/release/rcodis-proxy --listen "127.0.0.1:$pp" --threads 1 "${sb[@]}" --slots-file "$tmp/topo.json" >/dev/null 2>&1 & ppid=$!; pids+=($ppid); wait_ping "$pp"
# twemproxy (Debian's nutcracker, single-threaded C, epoll) in front of the same two servers
# as a reference, when installed (`apt-get install nutcracker`).
tw=""
if command -v nutcracker >/dev/null 2>&1; then
  tw=$(free_port)
  printf 'rcodis:\n  listen: 127.0.0.1:%s\n  hash: crc32a\n  distribution: modula\n  redis: true\n  server_connections: 1\n  auto_eject_hosts: false\n  servers:\n   - 127.0.0.1:%s:1\n   - 127.0.0.1:%s:1\n' "$tw" "$s1" "$s2" >"$tmp/nutcracker.yml"
  nutcracker -c "$tmp/nutcracker.yml" -o "$tmp/nutcracker.log" -s "$(free_port)" >/dev/null 2>&1 & twpid=$!; pids+=($twpid); wait_ping "$tw"
fi
hz=$(getconf CLK_TCK)
echo "machine: $(nproc) cores; redis-benchmark -c 50 -t set,get -d 32 -r 100000; backends: ${BACKEND:-rcodis}; rcodis flags: ${sb[*]:-none}"
printf "| round | target | pipeline | SET req/s | GET req/s | proxy CPU µs/request |\n|---|---|---|---|---|---|\n"
targets="direct proxy"; [ -n "$tw" ] && targets="direct proxy twemproxy"
for r in $(seq "$rounds"); do
  for P in 16 1; do
    n=$([ "$P" = 16 ] && echo 1000000 || echo 200000)
    for target in $targets; do
      case $target in direct) port=$s1; cpid=$ppid;; proxy) port=$pp; cpid=$ppid;; twemproxy) port=$tw; cpid=$twpid;; esac
      before=$(awk '{print $14+$15}' /proc/$cpid/stat)
      out=$(redis-benchmark -p "$port" -c 50 -P "$P" -t set,get -d 32 -r 100000 -n "$n" -q 2>/dev/null | tr '\r' '\n' | grep -E 'requests per second')
      after=$(awk '{print $14+$15}' /proc/$cpid/stat)
      set_rps=$(echo "$out" | awk '/^SET/{print $2}'); get_rps=$(echo "$out" | awk '/^GET/{print $2}')
      cpu=$([ "$target" != direct ] && python3 -c "print(f'{($after-$before)/$hz/(2*$n)*1e6:.2f}')" || echo "")
      printf "| %s | %s | %s | %s | %s | %s |\n" "$r" "$target" "$P" "$set_rps" "$get_rps" "$cpu"
    done
  done
done
# rcodis-bench (memtier-style, one thread of 50 connections, keys 0..100000, prefilled so
# GETs hit) with the issue's mixes, SET:GET 1:10 and 1:1, 5 s each. Its client costs less per
# request than redis-benchmark, so more of the two cores is left to what it measures.
for port in "$s1" "$pp"; do
  target/release/rcodis-bench -p "$port" -t 1 -c 50 --pipeline 16 -d 32 --key-maximum 100000 --prefill -n 1 --hide-histogram >/dev/null 2>&1
done
printf "\n| round | rcodis-bench | pipeline | SET:GET | ops/s | client CPU µs/op | proxy CPU µs/op |\n|---|---|---|---|---|---|---|\n"
for r in $(seq "$rounds"); do
  for P in 16 1; do
    for ratio in 1:10 1:1; do
      for target in $targets; do
        case $target in direct) port=$s1; cpid=$ppid;; proxy) port=$pp; cpid=$ppid;; twemproxy) port=$tw; cpid=$twpid;; esac
        before=$(awk '{print $14+$15}' /proc/$cpid/stat)
        out=$( { /usr/bin/time -f "TIME %U %S" target/release/rcodis-bench -p "$port" -t 1 -c 50 --pipeline "$P" --ratio "$ratio" -d 32 --key-maximum 100000 --test-time 5 --hide-histogram; } 2>&1 )
        after=$(awk '{print $14+$15}' /proc/$cpid/stat)
        ops=$(echo "$out" | awk '/^Totals/{print $2}')
        ccpu=$(echo "$out" | awk '/^TIME/{print $2+$3}')
        python3 -c '
import sys
t, r, p, ratio, ops, ccpu, b, a, hz = sys.argv[1:]
n = float(ops) * 5
client = f"{float(ccpu) / n * 1e6:.2f}"
proxy = f"{(int(a) - int(b)) / int(hz) / n * 1e6:.2f}" if t != "direct" else ""
print(f"| {r} | {t} | {p} | {ratio} | {float(ops):,.0f} | {client} | {proxy} |")
' "$target" "$r" "$P" "$ratio" "$ops" "$ccpu" "$before" "$after" "$hz"
      done
    done
  done
done
# Added latency: one client, pipeline 1, GET p50 direct versus through the proxy.
printf "\n| round | one client, pipeline 1 | direct GET p50 ms | proxy GET p50 ms | added µs |\n|---|---|---|---|---|\n"
redis-cli -p "$pp" set key:__rand_int__ x >/dev/null
for r in $(seq "$rounds"); do
  d=$(redis-benchmark -p "$s1" -c 1 -P 1 -t get -n 50000 -q 2>/dev/null | tr '\r' '\n' | grep -oE 'p50=[0-9.]+' | tail -1 | cut -d= -f2)
  p=$(redis-benchmark -p "$pp" -c 1 -P 1 -t get -n 50000 -q 2>/dev/null | tr '\r' '\n' | grep -oE 'p50=[0-9.]+' | tail -1 | cut -d= -f2)
  added=$(python3 -c "print(f'{($p-$d)*1000:.0f}')")
  printf "| %s | GET | %s | %s | %s |\n" "$r" "$d" "$p" "$added"
done
