#!/usr/bin/env bash
# Syscalls per frame, tabecho beside the byte-echo ceiling, for the same load.
#
#   scripts/syscalls.sh [CONNECTIONS] [PIPELINE] [SECONDS]     (defaults 100 1 5)
#
# Counts the server's syscalls with perf's syscall tracepoints (`perf stat -e
# 'syscalls:sys_enter_*' -p PID`, low overhead, unlike strace) while `tabecho load` drives it,
# and divides by the frames answered. Installs linux-perf from Debian's packages if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
conns=${1:-100}
pipeline=${2:-1}
secs=${3:-5}

if ! command -v perf >/dev/null; then
  echo "perf is missing: installing linux-perf from Debian's packages"
  apt-get install -y linux-perf >/dev/null || { apt-get update >/dev/null && apt-get install -y linux-perf >/dev/null; }
fi
cargo build --release --quiet
cargo build --release --quiet --manifest-path benches/ceiling/Cargo.toml
out=$target_dir/syscalls
ceiling=${CARGO_TARGET_DIR:-benches/ceiling/target}/release/ceiling-echo
mkdir -p "$out"
events=syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_write,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_accept4,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_close,syscalls:sys_enter_clock_gettime

# $1: name; the server command follows. Prints: name frames syscalls per-frame breakdown.
measure() {
  local name=$1; shift
  local log="$out/$name.log"
  : >"$log"
  "$@" >"$log" 2>&1 &
  local spid=$!
  local addr
  addr=$(listening_addr "$log") || true
  local raw=""
  [ "$name" = ceiling ] && raw=--raw
  perf stat -x, -e "$events" -p "$spid" -o "$out/$name.perf" &
  local ppid=$!
  "$bin" load --addr "$addr" -c "$conns" -p "$pipeline" -d "${secs}s" --threads 1 $raw --json >"$out/$name.json"
  kill -INT $ppid; wait $ppid || true
  kill $spid; wait $spid 2>/dev/null || true
  local frames
  frames=$(sed -n 's/.*"frames_answered":\([0-9]*\).*/\1/p' "$out/$name.json")
  awk -F, -v name="$name" -v frames="$frames" '
    /sys_enter/ { split($3, e, "sys_enter_"); n[e[2]] = $1; total += $1 }
    END {
      printf "%-8s frames %-9d syscalls/frame %.3f  (", name, frames, total / frames
      for (k in n) if (n[k] > 0) printf " %s %.3f", k, n[k] / frames
      printf " )\n"
    }' "$out/$name.perf"
}

echo "connections $conns, pipeline $pipeline, ${secs} s, 32-byte frames"
measure tabecho "$bin" serve --listen 127.0.0.1:0 --idle-timeout 60s
measure ceiling "$ceiling" 127.0.0.1:0
