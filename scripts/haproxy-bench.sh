#!/usr/bin/env bash
# haproxy-bench.sh: what HAProxy in front costs per frame: one tabecho driven directly,
# then through HAProxy (deploy/haproxy.cfg), side by side in one run, same load.
#
#   scripts/haproxy-bench.sh [ROUNDS]     (default 2; CLUSTER_PORT=18085 if 8085 is taken)
#
# One `tabecho serve --idle-timeout 60s` on a free port, and HAProxy on CLUSTER_PORT
# [8085] with deploy/haproxy.cfg, all three of its server lines pointed at that one
# instance (so both paths end in the same server process; the config's health checks,
# 6 short connections a second, run in both). For pipeline 1 and 16, ROUNDS times,
# alternating direct and through HAProxy:
#   - a verified closed-loop load of known size: `tabecho load -t 1 -c 100 -p P
#     --frames N` (N = 1,000 per connection at pipeline 1, 10,000 at 16); the CPU of the
#     server and of HAProxy from /proc/PID/stat (utime + stime, 10 ms ticks) before and
#     after, divided by the frames answered (which must be all of them);
#   - an open loop at a fixed rate (`--rate 10000 -d 5s`, 100 connections): latency
#     p50/p99 at the same offered load.
# Prints one line per run and the medians' ratios. HAProxy is installed with apt-get if
# missing. Exit status: 0 every load verified; 1 a load lost or corrupted frames;
# 2 the setup failed. Everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
rounds=${1:-2}
port=${CLUSTER_PORT:-8085}
conns=100

die() { echo "haproxy-bench: $*" >&2; exit 2; }
if ! command -v haproxy >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "haproxy-bench: haproxy is missing; installing it: $sudo apt-get install -y haproxy" >&2
  $sudo apt-get install -y haproxy >/dev/null || die "could not install haproxy"
fi
[ -z "$(ss -Hltn "sport = :$port")" ] || die "127.0.0.1:$port is taken; choose another CLUSTER_PORT"
cargo build --release --quiet || die "the build failed"
out=$target_dir/haproxy-bench
mkdir -p "$out"
run=$(mktemp -d)

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$run"
}
trap cleanup EXIT

start_ready tabecho "$out/tabecho.log" "$bin" serve --listen 127.0.0.1:0 --idle-timeout 60s
server=$PID direct=$ADDR
pids+=("$server")
backend=${direct##*:}
CLUSTER_RUN=$run CLUSTER_PORT=$port TABECHO_PORT1=$backend TABECHO_PORT2=$backend \
  TABECHO_PORT3=$backend haproxy -db -f deploy/haproxy.cfg >"$out/haproxy.log" 2>&1 &
proxy=$!
pids+=("$proxy")
proxied=127.0.0.1:$port
for _ in $(seq 100); do
  "$bin" send --addr "$proxied" --timeout 1s up >/dev/null 2>&1 && break
  sleep 0.1
done
"$bin" send --addr "$proxied" --timeout 1s up >/dev/null 2>&1 || die "HAProxy does not answer on $proxied"

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
status=0

# closed NAME ADDR PIPELINE FRAMES: one verified --frames run; prints a result line
# "NAME P frames server_us haproxy_us total_us p50_us p99_us" to stdout.
closed() {
  local name=$1 addr=$2 p=$3 n=$4 s0 h0 s1 h1 json
  json="$out/closed-$name-p$p.json"
  s0=$(ticks "$server") h0=$(ticks "$proxy")
  "$bin" load --addr "$addr" -t 1 -c $conns -p "$p" --frames "$n" -d 120s --json >"$json" || status=1
  s1=$(ticks "$server") h1=$(ticks "$proxy")
  python3 - "$json" "$name" "$p" "$((conns * n))" "$((s1 - s0))" "$((h1 - h0))" "$hz" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
name, p, want, ds, dh, hz = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
n = r["frames_answered"]
if n != want or r["lost"] or r["corrupt"] or r["unexpected"]:
    print(f"UNVERIFIED {name} p{p}: {n} of {want} answered, {r['lost']} lost, {r['corrupt']} corrupt", file=sys.stderr)
    sys.exit(1)
us = lambda t: t * 1e6 / hz / n
print(f"{name} {p} {n} {us(ds):.3f} {us(dh):.3f} {us(ds + dh):.3f} {r['p50_us']} {r['p99_us']} {r['elapsed_secs']:.2f}")
PY
}

# open NAME ADDR PIPELINE: an open loop at 10,000 frames/s for 5 s; prints
# "NAME P p50_us p99_us lost".
open_loop() {
  local name=$1 addr=$2 p=$3 json
  json="$out/open-$name-p$p.json"
  "$bin" load --addr "$addr" -t 1 -c $conns -p "$p" --rate 10000 -d 5s --json >"$json" || status=1
  python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], r["p50_us"], r["p99_us"], r["lost"] + r["corrupt"])' \
    "$json" "$name" "$p"
}

echo "tabecho $direct, HAProxy $proxied -> $direct; $conns connections, 32-byte frames, load -t 1"
echo "$(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
: >"$out/closed.txt"
: >"$out/open.txt"
for p in 1 16; do
  n=$([ "$p" = 1 ] && echo 1000 || echo 10000)
  for _ in $(seq "$rounds"); do
    closed direct "$direct" "$p" "$n" | tee -a "$out/closed.txt" || status=1
    closed haproxy "$proxied" "$p" "$n" | tee -a "$out/closed.txt" || status=1
  done
  open_loop direct "$direct" "$p" | tee -a "$out/open.txt"
  open_loop haproxy "$proxied" "$p" | tee -a "$out/open.txt"
done

echo
echo "CPU per frame, µs (median of $rounds), closed loop --frames; latency p50/p99 in ms"
python3 - "$out/closed.txt" "$out/open.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
opens = {(l.split()[0], l.split()[1]): l.split() for l in open(sys.argv[2]) if l.strip()}
med = lambda xs: statistics.median(xs)
print(f"{'path':8} {'p':>3} {'server':>8} {'haproxy':>8} {'total':>8} {'closed p50/p99':>16} {'open 10k/s p50/p99':>20}")
res = {}
for name in ("direct", "haproxy"):
    for p in ("1", "16"):
        rs = [r for r in rows if r[0] == name and r[1] == p]
        if not rs:
            continue
        s, h, t = (med([float(r[i]) for r in rs]) for i in (3, 4, 5))
        p50, p99 = med([int(r[6]) for r in rs]), med([int(r[7]) for r in rs])
        o = opens.get((name, p))
        res[name, p] = t
        print(f"{name:8} {p:>3} {s:8.3f} {h:8.3f} {t:8.3f} {p50/1000:7.3f}/{p99/1000:<8.3f} "
              f"{int(o[2])/1000:9.3f}/{int(o[3])/1000:<8.3f}")
for p in ("1", "16"):
    if ("direct", p) in res and ("haproxy", p) in res:
        print(f"pipeline {p}: through HAProxy / direct, CPU per frame (server + haproxy): "
              f"{res['haproxy', p] / res['direct', p]:.2f}")
PY
exit "$status"
