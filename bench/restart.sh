#!/usr/bin/env bash
# Restart time with N small keys (default 10 million): rcodis-server (append-only log,
# rewritten so it holds one image record per key, and snapshot) versus Debian's
# redis-server (RDB, and AOF with its RDB preamble). Keys come from DEBUG POPULATE
# (key:N -> value:N), then the data is persisted, the server stopped with SIGTERM and
# started again; the time is from exec to the first PING that is not -LOADING.
#
#   bash bench/restart.sh [keys] [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
keys="${1:-10000000}"
threads="${2:-2}"
cargo build --release --quiet --bin rcodis-server
bin=$PWD/target/release/rcodis-server
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
# Waits for a PONG (not -LOADING) within 20 minutes.
wait_ready() {
  local deadline=$(( $(date +%s) + 1200 ))
  until [ "$(redis-cli -p "$1" ping 2>/dev/null)" = "PONG" ]; do
    [ "$(date +%s)" -lt $deadline ] || { echo "server on $1 not ready" >&2; exit 1; }
    sleep 0.05
  done
}
stop() { kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done; pid=; }
wait_info() { # port field value
  local deadline=$(( $(date +%s) + 1200 ))
  until redis-cli -p "$1" info persistence | tr -d '\r' | grep -qx "$2:$3"; do
    [ "$(date +%s)" -lt $deadline ] || { echo "timeout waiting for $2:$3" >&2; exit 1; }
    sleep 0.1
  done
}
run() { # name persist-cmd(s) -- server cmd...
  local name=$1 persist=$2; shift 2
  local port; port=$(free_port)
  mkdir -p "$tmp/$name"
  "$@" --port "$port" --dir "$tmp/$name" >"$tmp/$name.log" 2>&1 & pid=$!
  wait_ready "$port"
  redis-cli -p "$port" debug populate "$keys" >/dev/null
  case $persist in
    bgrewriteaof) redis-cli -p "$port" bgrewriteaof >/dev/null; sleep 0.2; wait_info "$port" aof_rewrite_in_progress 0 ;;
    bgsave) redis-cli -p "$port" bgsave >/dev/null; sleep 0.2; wait_info "$port" rdb_bgsave_in_progress 0 ;;
  esac
  local n; n=$(redis-cli -p "$port" dbsize)
  stop
  local size; size=$(du -sb "$tmp/$name" | cut -f1)
  local t0; t0=$(now)
  "$@" --port "$port" --dir "$tmp/$name" >>"$tmp/$name.log" 2>&1 & pid=$!
  wait_ready "$port"
  local t1; t1=$(now)
  local m; m=$(redis-cli -p "$port" dbsize)
  [ "$n" = "$m" ] || { echo "$name: $n keys before, $m after" >&2; exit 1; }
  local rss; rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status")
  stop
  printf '| %s | %s | %.1f | %.2f | %.0f |\n' "$name" "$m" "$(echo "$size/1048576" | bc -l)" "$(echo "$t1-$t0" | bc -l)" "$(echo "$rss/1024" | bc -l)"
  rm -rf "${tmp:?}/$name"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $keys keys"
echo
echo "| server | keys | files MiB | restart s | RSS MiB |"
echo "|---|---|---|---|---|"
run "redis-server RDB" bgsave redis-server --enable-debug-command yes --save '' --appendonly no
run "redis-server AOF (RDB preamble)" bgrewriteaof redis-server --enable-debug-command yes --save '' --appendonly yes
run "rcodis-server --threads $threads log" bgrewriteaof "$bin" --threads "$threads" --appendonly yes
run "rcodis-server --threads $threads snapshot" bgsave "$bin" --threads "$threads" --appendonly no
