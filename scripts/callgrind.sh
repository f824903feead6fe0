#!/usr/bin/env bash
# Instructions per frame at 10 and at 1,000 connections, counted by callgrind, for tabecho
# and, beside it, for the byte-echo ceiling (benches/ceiling).
#
#   scripts/callgrind.sh [--pipeline N] [--metrics] [FRAMES]     (default FRAMES=100000)
#
# --pipeline N: frames in flight per connection (default 1).
# --metrics: compare tabecho with `--metrics 127.0.0.1:0` against tabecho without it
#   (instead of against the ceiling): the cost of the metrics on the frame path (its turn
#   timing; nobody scrapes during the run).
#
# Instructions are repeatable where wall time is not. For each connection count the server
# runs under `valgrind --tool=callgrind` twice, answering FRAMES and then 2*FRAMES frames
# (32-byte payloads, pipeline 1, driven by `tabecho load --frames`); the difference of the
# two totals divided by FRAMES is the marginal cost of a frame, with start-up, accepts and
# shutdown cancelled out. Only user-space instructions are counted (the kernel's TCP path
# is not), which is exactly the part the server controls; scripts/syscalls.sh shows the
# kernel part is the same syscalls for both. The per-frame cost must not grow with
# connections: the timer wheel does not scan.
#
# Installs valgrind from Debian's packages if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
pipeline=1
servers=(tabecho ceiling)
while [ $# -gt 0 ]; do
  case $1 in
    --pipeline) pipeline=$2; shift 2 ;;
    --metrics) servers=(tabecho metrics); shift ;;
    *) break ;;
  esac
done
frames=${1:-100000}

if ! command -v valgrind >/dev/null; then
  echo "valgrind is missing: installing it from Debian's packages (apt-get install valgrind)"
  if command -v sudo >/dev/null && [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get install -y valgrind >/dev/null || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y valgrind >/dev/null; }
fi

cargo build --release --quiet
cargo build --release --quiet --manifest-path benches/ceiling/Cargo.toml
ceiling=${CARGO_TARGET_DIR:-benches/ceiling/target}/release/ceiling-echo
out=$target_dir/callgrind
mkdir -p "$out"

# measure SERVER CONNS FRAMES: runs SERVER (tabecho, metrics = tabecho --metrics, or ceiling)
# under callgrind for FRAMES
# frames over CONNS connections; prints the total instruction count (Ir).
measure() {
  local server=$1 conns=$2 total=$3
  local log="$out/$server-$conns-$total.log" file="$out/callgrind.$server.$conns.$total.out"
  local cmd=("$bin" serve --listen 127.0.0.1:0 --idle-timeout 600s) raw=""
  if [ "$server" = ceiling ]; then cmd=("$ceiling" 127.0.0.1:0); raw=--raw; fi
  if [ "$server" = metrics ]; then cmd+=(--metrics 127.0.0.1:0); fi
  rm -f "$file"
  : >"$log"
  valgrind --tool=callgrind --callgrind-out-file="$file" "${cmd[@]}" >"$log" 2>&1 &
  local vpid=$!
  local addr
  addr=$(listening_addr "$log") || true
  [ -n "$addr" ] || { echo "server did not start; see $log" >&2; kill $vpid; exit 1; }
  "$bin" load --addr "$addr" --connections "$conns" --threads 1 --pipeline "$pipeline" --size 32 $raw \
    --frames $((total / conns)) --duration 600s --connect-timeout 60s --drain 60s \
    >"$out/load-$server-$conns-$total.txt" \
    || { echo "load failed: $server, $conns connections; see $out/load-$server-$conns-$total.txt" >&2; kill $vpid; exit 1; }
  # SIGTERM: tabecho shuts down cleanly, the ceiling dies; callgrind writes its totals.
  kill -TERM $vpid
  wait $vpid || true
  sed -n 's/^summary: \([0-9]*\).*/\1/p' "$file"
}

echo "pipeline $pipeline, 32-byte frames"
printf '%-8s %-12s %-14s %-14s %s\n' server connections "Ir(${frames})" "Ir($((2 * frames)))" "instructions/frame"
declare -A per_frame
for server in "${servers[@]}"; do
  for conns in 10 1000; do
    one=$(measure "$server" $conns "$frames")
    two=$(measure "$server" $conns $((2 * frames)))
    per_frame[$server.$conns]=$(( (two - one) / frames ))
    printf '%-8s %-12s %-14s %-14s %s\n' "$server" "$conns" "$one" "$two" "${per_frame[$server.$conns]}"
  done
done
if [ "${servers[1]}" = metrics ]; then
  awk -v a="${per_frame[tabecho.10]}" -v b="${per_frame[tabecho.1000]}" \
      -v c="${per_frame[metrics.10]}" -v d="${per_frame[metrics.1000]}" 'BEGIN {
    printf "--metrics on / off: %.4f at 10 connections, %.4f at 1000 (target <= 1.03)\n", c / a, d / b }'
  exit 0
fi
awk -v a="${per_frame[tabecho.10]}" -v b="${per_frame[tabecho.1000]}" \
    -v c="${per_frame[ceiling.10]}" -v d="${per_frame[ceiling.1000]}" 'BEGIN {
  printf "tabecho 1000/10 connections: %.3f (target <= 1.1)\n", b / a
  printf "tabecho / ceiling: %.3f at 10 connections, %.3f at 1000\n", a / c, b / d }'
