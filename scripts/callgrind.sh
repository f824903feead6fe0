#!/usr/bin/env bash
# Instructions per frame at 10 and at 1,000 connections, counted by callgrind.
#
#   scripts/callgrind.sh [FRAMES]        (default FRAMES=100000)
#
# Instructions are repeatable where wall time is not. For each connection count the server
# runs under `valgrind --tool=callgrind` twice, answering FRAMES and then 2*FRAMES frames
# (32-byte payloads, pipeline 1, driven by `tabecho load --frames`); the difference of the
# two totals divided by FRAMES is the marginal cost of a frame, with start-up, accepts and
# shutdown cancelled out. Only user-space instructions are counted (the kernel's TCP path
# is not), which is exactly the part the server controls. The per-frame cost must not grow
# with connections: the timer wheel does not scan.
#
# Installs valgrind from Debian's packages if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
frames=${1:-100000}

if ! command -v valgrind >/dev/null; then
  echo "valgrind is missing: installing it from Debian's packages (apt-get install valgrind)"
  if command -v sudo >/dev/null && [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get install -y valgrind >/dev/null || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y valgrind >/dev/null; }
fi

cargo build --release --quiet
bin=target/release/tabecho
out=target/callgrind
mkdir -p "$out"

# Runs the server under callgrind for $2 frames over $1 connections; prints total Ir.
measure() {
  local conns=$1 total=$2 log="$out/serve-$1-$2.log" file="$out/callgrind.$1.$2.out"
  rm -f "$file"
  : >"$log"
  valgrind --tool=callgrind --callgrind-out-file="$file" \
    "$bin" serve --listen 127.0.0.1:0 --idle-timeout 600s 2>"$log" &
  local vpid=$!
  local addr
  addr=$(listening_addr "$log") || true
  [ -n "$addr" ] || { echo "server did not start; see $log" >&2; kill $vpid; exit 1; }
  "$bin" load --addr "$addr" --connections "$conns" --threads 1 --pipeline 1 --size 32 \
    --frames $((total / conns)) --duration 600s --connect-timeout 60s --drain 60s >"$out/load-$1-$2.txt" \
    || { echo "load failed at $conns connections; see $out/load-$1-$2.txt" >&2; kill $vpid; exit 1; }
  kill -INT $vpid
  wait $vpid
  # The "summary:" line of the callgrind output holds the total instruction count.
  sed -n 's/^summary: \([0-9]*\).*/\1/p' "$file"
}

printf '%-12s %-14s %-14s %s\n' connections "Ir(${frames})" "Ir($((2 * frames)))" "instructions/frame"
declare -A per_frame
for conns in 10 1000; do
  one=$(measure $conns "$frames")
  two=$(measure $conns $((2 * frames)))
  per_frame[$conns]=$(( (two - one) / frames ))
  printf '%-12s %-14s %-14s %s\n' "$conns" "$one" "$two" "${per_frame[$conns]}"
done
awk -v a="${per_frame[10]}" -v b="${per_frame[1000]}" \
  'BEGIN { printf "ratio 1000/10 connections: %.3f (target <= 1.1)\n", b / a }'
