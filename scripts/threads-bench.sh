#!/usr/bin/env bash
# threads-bench.sh [ROUNDS]: one reactor against two (`serve --threads 2`), side by side,
# alternating, ROUNDS times (default 3); prints medians.
#
# 1. Server CPU per frame (utime + stime of every thread, /proc/PID/stat, over a verified
#    `tabecho load --frames`), at 100 and 10,000 connections, pipeline 1 and 16, nothing
#    pinned: the load generator (one thread) and the server share the two CPUs.
# 2. Balance at 1,000 connections over TCP and over a Unix socket: each reactor's share
#    of the connections accepted and the frames answered (from `--metrics`).
# 3. Throughput, closed loop, 100 connections, pipeline 16, 5 s (the load generator uses
#    one thread: on two CPUs a second reactor competes with it).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
rounds=${1:-3}
cargo build --release --quiet
bin=target/release/tabecho
out=target/threads-bench
mkdir -p "$out"
ulimit -n 20000
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null || true' EXIT

# start THREADS [ARGS...]: a server on 127.0.0.1:0 (or ARGS' --listen); sets pid and addr.
start() {
  local threads=$1; shift
  "$bin" serve --listen 127.0.0.1:0 --idle-timeout 60s --threads "$threads" "$@" 2>"$out/server.log" &
  pid=$!
  addr=$(listening_addr "$out/server.log")
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "== 1. server CPU per frame (us), median of $rounds, 1 reactor vs 2"
printf '%6s %4s %10s %10s %7s\n' conns pipe "1 reactor" "2 reactors" ratio
for conns in 100 10000; do
  for pipe in 1 16; do
    frames=$(( pipe == 1 ? 200000 : 1000000 ))
    per_conn=$(( frames / conns ))
    for threads in 1 2; do : >"$out/cpu-$threads"; done
    for _ in $(seq "$rounds"); do
      for threads in 1 2; do
        start "$threads"
        t0=$(ticks "$pid")
        "$bin" load --addr "$addr" -c "$conns" -p "$pipe" --frames "$per_conn" -t 1 \
          --connect-rate 20000 -d 120s --json >"$out/load.json"
        t1=$(ticks "$pid")
        stop
        python3 -c "import json,sys; r=json.load(open('$out/load.json')); sys.exit(0 if r['verified'] else 1)"
        echo "scale=4; ($t1 - $t0) * 10000 / ($per_conn * $conns)" | bc >>"$out/cpu-$threads"
      done
    done
    one=$(median <"$out/cpu-1"); two=$(median <"$out/cpu-2")
    printf '%6s %4s %10s %10s %7s\n' "$conns" "$pipe" "$one" "$two" "$(echo "scale=3; $two / $one" | bc)"
  done
done

echo
echo "== 2. balance over 2 reactors at 1,000 connections (reactor 0's share)"
share() { # share LISTEN: prints reactor 0's share of accepted and frames
  "$bin" serve --listen "$1" --threads 2 --idle-timeout 60s --metrics 127.0.0.1:0 2>"$out/server.log" &
  pid=$!
  addr=$(listening_addr "$out/server.log")
  maddr=$(sed -n 's|.*metrics on http://\(.*\)/metrics|\1|p' "$out/server.log" | head -n1)
  "$bin" load --addr "$addr" -c 1000 -p 1 --frames 50 -t 1 -d 60s --json >"$out/load.json"
  python3 - "$maddr" <<'PY'
import sys, urllib.request
page = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics").read().decode()
def per(name):
    v = {}
    for line in page.splitlines():
        if line.startswith(name + '{reactor="'):
            r = line.split('"')[1]
            v[r] = float(line.rsplit(" ", 1)[1])
    return v
for name in ("tabecho_accepted_total", "tabecho_frames_total"):
    v = per(name)
    print(f"   {name}: reactor 0 {v['0']:.0f}, reactor 1 {v['1']:.0f}: {100 * v['0'] / (v['0'] + v['1']):.1f}%")
PY
  stop
}
echo "-- TCP (SO_REUSEPORT)"
share 127.0.0.1:0
echo "-- Unix (handoff)"
share "unix:$PWD/$out/threads.sock"

echo
echo "== 3. replies/s, closed loop, 100 connections, pipeline 16, 5 s"
for threads in 1 2 1 2; do
  start "$threads"
  "$bin" load --addr "$addr" -c 100 -p 16 -d 5s --json >"$out/load.json"
  stop
  python3 -c "import json; r=json.load(open('$out/load.json')); print(f'   {$threads} reactor(s): {r[\"replies_per_sec\"]:.0f} replies/s, p99 {r[\"p99_us\"]/1000:.2f} ms, verified {r[\"verified\"]}')"
done
