#!/usr/bin/env bash
# Slot migration between two rcodis-servers on loopback (issue 5): one slot holding
# 100,000 small keys, and one 1,000,000-field hash, each moved with SLOTSMGRTSLOT (sync)
# and SLOTSMGRTSLOT-ASYNC, while redis-benchmark GETs an unrelated key on the source;
# GET latency percentiles during each move versus idle.
#
#   bash bench/migration.sh [small_keys] [hash_fields]
set -euo pipefail
cd "$(dirname "$0")/.."
small="${1:-100000}"
fields="${2:-1000000}"
cargo build --release --quiet --bin rcodis-server
bin=$PWD/target/release/rcodis-server
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP_LOGS:-}" ] && cat "$tmp"/*.log | grep -a "async migration" | tail -5; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ping() { for _ in $(seq 200); do [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0; sleep 0.05; done; exit 1; }
# (Not in a subshell: the PIDs must reach `cleanup`.)
start() { local p; p=$(free_port); mkdir -p "$tmp/$p"; "$bin" --port "$p" --threads 1 --dir "$tmp/$p" >"$tmp/$p.log" 2>&1 & pids+=($!); wait_ping "$p"; port=$p; }
start; src=$port; start; dst=$port
redis-cli -p "$src" set unrelated value >/dev/null
# GET latency on the source: p50 / p99 / p99.9 (max) in ms from redis-benchmark's
# percentile distribution.
lat() { redis-benchmark -p "$src" -c 4 -n "$1" -t get -r 1 --precision 3 2>/dev/null | tr '\r' '\n' \
  | awk '/Latency by percentile/{f=1;next} f&&/%/{p=$1+0; v=$3; if(a==""&&p>=50)a=v; if(b==""&&p>=99)b=v; if(c==""&&p>=99.9)c=v; m=v} f&&/summary/{exit} END{print a" / "b" / "c" (max "m")"}'; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); servers --threads 1"
echo "idle GET p50 / p99 / p99.9 (max) ms: $(lat 200000)"
fill_small() { redis-cli -p "$src" debug populate "$small" "{s}k" 16 >/dev/null; }
fill_hash() {
  python3 - "$fields" <<'PY' | redis-cli -p "$src" --pipe >/dev/null
import sys
n = int(sys.argv[1]); out = sys.stdout.buffer
for start in range(0, n, 1000):
    args = [b"HSET", b"{h}big"]
    for i in range(start, min(n, start + 1000)):
        args += [b"f%d" % i, b"value-%d" % i]
    out.write(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
PY
}
# Moves the slot of key $1 over one connection: sync with SLOTSMGRTSLOT (one key per call,
# the way a slot of untagged keys moves), async with SLOTSMGRTSLOT-ASYNC (500 keys per
# batch); prints seconds.
move() { # key method
  python3 - "$src" "$dst" "$1" "$2" <<'PY'
import socket, sys, time
src, dst, key, method = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode(), sys.argv[4]
s = socket.create_connection(("127.0.0.1", src)); f = s.makefile("rb")
def cmd(*args):
    s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
    return read()
def read():
    line = f.readline()
    t, body = line[:1], line[1:-2]
    if t == b"-": raise SystemExit("move failed: " + body.decode())
    if t == b":": return int(body)
    if t == b"*": return [read() for _ in range(int(body))]
    if t == b"$": data = f.read(int(body) + 2); return data[:-2]
    return body
slot = cmd(b"SLOTSHASHKEY", key)[0]
t0 = time.time()
while True:
    if method == "sync":
        r = cmd(b"SLOTSMGRTSLOT", b"127.0.0.1", dst.encode(), b"30000", b"%d" % slot)
    else:
        r = cmd(b"SLOTSMGRTSLOT-ASYNC", b"127.0.0.1", dst.encode(), b"30000", b"0", b"0", b"%d" % slot, b"500")
    if r[1] == 0:
        break
print("%.3f" % (time.time() - t0))
PY
}
echo
echo "| what | method | seconds | keys or fields/s | GET p50 / p99 / p99.9 (max) ms during |"
echo "|---|---|---|---|---|"
for what in small hash; do
  for method in sync async; do
    redis-cli -p "$dst" flushall >/dev/null
    if [ $what = small ]; then fill_small; n=$small; tag="{s}k"; else fill_hash; n=$fields; tag="{h}big"; fi
    lat 2000000 >"$tmp/lat" & lp=$!
    sleep 0.3
    secs=$(move "$tag" $method)
    kill -INT $lp 2>/dev/null || true; wait $lp 2>/dev/null || true
    [ "$(redis-cli -p "$src" slotsinfo | wc -l)" -le 2 ] || true
    moved=$( [ $what = small ] && redis-cli -p "$dst" dbsize || redis-cli -p "$dst" hlen '{h}big')
    [ "$moved" = "$n" ] || { echo "$what/$method: $moved of $n on the target" >&2; exit 1; }
    printf '| %s | %s | %.2f | %.0f | %s |\n' "$what ($n)" $method "$secs" "$(echo "$n/$secs" | bc -l)" "$(cat "$tmp/lat")"
  done
done
