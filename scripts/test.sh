#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need (Debian's
# redis-server and redis-tools as the reference, etcd-server for the etcd coordinator tests),
# checks the machine for glommio, then runs format and lint gates and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
if [ "${#need[@]}" -gt 0 ]; then
  echo "== installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "== environment"
bash scripts/check-env.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo build (process tests run the binaries from target/)"
cargo build --workspace --bins --quiet

echo "== cargo test"
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.txt
