#!/usr/bin/env bash
# Server memory per idle connection: RSS with N idle connections less RSS before them.
#
#   scripts/idle_memory.sh [N]        (default 10000; at most ~19,900 here)
#
# Starts a release server with a long idle timeout (so nothing is reaped while we look),
# warms it with one round trip, reads VmRSS, opens N idle connections with
# `tabecho load --idle`, waits until the server holds them all (/proc/PID/fd), reads VmRSS
# again, and prints bytes per connection. This is user-space memory only: the kernel's
# socket buffers are not in RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
n=${1:-10000}
cargo build --release --quiet
bin=target/release/tabecho
log=$(mktemp)
"$bin" serve --listen 127.0.0.1:0 --idle-timeout 120s --max-connections 19900 2>"$log" &
spid=$!
trap 'kill $spid 2>/dev/null || true; rm -f "$log"' EXIT
addr=$(listening_addr "$log") || { echo "server did not start" >&2; exit 1; }
"$bin" send --addr "$addr" warm >/dev/null
sleep 0.2
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$spid/status"; }
fds() { ls "/proc/$spid/fd" | wc -l; }
before=$(rss)
fds0=$(fds)
"$bin" load --addr "$addr" --idle -c "$n" -d 20s --threads 1 >/dev/null &
lpid=$!
for _ in $(seq 1 400); do
  [ "$(fds)" -ge $((fds0 + n)) ] && break
  sleep 0.05
done
held=$(( $(fds) - fds0 ))
sleep 0.5
after=$(rss)
kill $lpid 2>/dev/null || true
wait $lpid 2>/dev/null || true
awk -v b="$before" -v a="$after" -v n="$held" 'BEGIN {
  printf "server RSS %d kB before, %d kB with %d idle connections: %.1f bytes per connection\n", b, a, n, (a - b) * 1024 / n }'
