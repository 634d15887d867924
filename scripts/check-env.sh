#!/usr/bin/env bash
# Checks what rcodis's glommio data plane needs from the machine: io_uring and a memlock
# limit of at least 512 KiB. Prints what is missing and how to fix it; exits 1 if anything is.
set -u
ok=1
lim=$(ulimit -l)
if [ "$lim" != "unlimited" ] && [ "$lim" -lt 512 ]; then
  echo "rcodis: memlock limit is ${lim} KiB; glommio needs at least 512 KiB." >&2
  echo "        raise it: 'ulimit -l 512' (as root), or LimitMEMLOCK= in a systemd unit, or" >&2
  echo "        'memlock' in /etc/security/limits.conf." >&2
  ok=0
fi
if [ -r /proc/sys/kernel/io_uring_disabled ] && [ "$(cat /proc/sys/kernel/io_uring_disabled)" != 0 ]; then
  echo "rcodis: io_uring is disabled (kernel.io_uring_disabled=$(cat /proc/sys/kernel/io_uring_disabled))." >&2
  echo "        enable it: sysctl -w kernel.io_uring_disabled=0" >&2
  ok=0
fi
major=$(uname -r | cut -d. -f1); minor=$(uname -r | cut -d. -f2)
if [ "$major" -lt 5 ] || { [ "$major" -eq 5 ] && [ "$minor" -lt 13 ]; }; then
  echo "rcodis: kernel $(uname -r) is older than 5.13; the data plane (glommio's io_uring, multishot polls) needs 5.13 or newer." >&2
  ok=0
fi
[ "$ok" = 1 ] && echo "rcodis: environment ok (kernel $(uname -r), memlock ${lim} KiB, io_uring enabled)"
[ "$ok" = 1 ]
