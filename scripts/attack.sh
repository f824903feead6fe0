#!/usr/bin/env bash
# attack.sh: what an attack does to healthy clients' latency, and what it makes the kernel
# hold: tabecho (1 and 2 reactors) beside the tokio bench server (benches/tokio-echo), one
# after the other in one run, same clients.
#
#   scripts/attack.sh [SCENARIO...]     (default: none flood mix)
#     none    no attack
#     flood   500 flooders: empty frames as fast as the socket takes them, never read
#     mix     5,000 flooders + 5,000 partial-frame holders (65,535 bytes, no TAB, held)
#   SERVERS="tabecho tabecho2 tokio" picks the servers; TABECHO_ARGS adds `serve` flags
#   (as in TABECHO_ARGS="--sndbuf 0 --rcvbuf 0" for the kernel's autotuning);
#   TABECHO_BIN=PATH serves with another tabecho binary (an older build, to compare).
#
# The healthy load: 100 connections at pipeline 16 in an open loop of 100,000 frames/s
# for 20 s, latency counted from each frame's scheduled send time (`tabecho load --rate`).
# The attack starts 3 s in and runs 12 s. The attackers' own socket buffers are capped
# at 16 KiB (`load --socket-buffer`): on a real network they would be on the attacker's
# machine, so on this one the kernel TCP memory counted is mostly the server's.
# Printed per run: healthy p50/p99/p99.9/max and lost, the peak of the kernel's TCP
# memory (/proc/net/sockstat, sampled every 50 ms), and the server's RSS growth.
# The attackers run at nice 19: on a real network their CPU would be their own machines';
# on this one it must not starve the healthy load generator, which counts its own
# scheduling delays as latency.
# Both servers run with a 30 s idle timeout, so the attackers stay for the whole attack.
# Traffic is on loopback only; each process holds at most 10,200 descriptors.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(none flood mix)
read -r -a servers <<<"${SERVERS:-tabecho tabecho2 tokio}"
read -r -a extra <<<"${TABECHO_ARGS:-}"

cargo build --release --quiet
cargo build --release --quiet --manifest-path benches/tokio-echo/Cargo.toml
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/tabecho
server_bin=${TABECHO_BIN:-$bin}
tokio=${CARGO_TARGET_DIR:-benches/tokio-echo/target}/release/tokio-echo
out=$target/attack
mkdir -p "$out"
if [ "$(ulimit -Hn)" -lt 10300 ]; then
  echo "attack.sh needs 10,300 descriptors per process; the hard limit is $(ulimit -Hn)"
  exit 2
fi
raise_nofile 10300

trap stop_servers EXIT

# start NAME: starts a server on 127.0.0.1:0 with a 30 s idle timeout; sets PID and ADDR.
start() {
  local log="$out/$1.log"
  case $1 in
    tabecho) start_server "$1" "$log" "$server_bin" serve --listen 127.0.0.1:0 \
      --idle-timeout 30s --metrics 127.0.0.1:0 "${extra[@]}" ;;
    tabecho2) start_server "$1" "$log" "$server_bin" serve --listen 127.0.0.1:0 \
      --idle-timeout 30s --metrics 127.0.0.1:0 --threads 2 "${extra[@]}" ;;
    tokio) start_server "$1" "$log" "$tokio" 127.0.0.1:0 30 ;;
  esac
}
tcp_pages() { awk '$1 == "TCP:" { print $NF }' /proc/net/sockstat; }

# sample_kernel FILE: until killed, keeps the peak of the kernel's TCP memory (pages) in FILE.
sample_kernel() {
  local peak=0 now
  while :; do
    now=$(tcp_pages)
    if [ "$now" -gt "$peak" ]; then peak=$now; echo "$peak" >"$1"; fi
    sleep 0.05
  done
}

printf '%-9s %-6s %9s %9s %9s %9s %6s %12s %10s\n' \
  server attack "p50 ms" "p99 ms" "p99.9 ms" "max ms" lost "kernel MiB" "rss +MiB"
for scenario in "${scenarios[@]}"; do
  for server in "${servers[@]}"; do
    start "$server"
    before=$(kb "$PID" VmRSS)
    base=$(tcp_pages)
    echo "$base" >"$out/kernel-peak"
    sample_kernel "$out/kernel-peak" &
    sampler=$!
    "$bin" load --addr "$ADDR" -c 100 -p 16 --rate 100000 -d 20s --json \
      >"$out/healthy-$server-$scenario.json" 2>"$out/healthy-$server-$scenario.err" &
    healthy=$!
    sleep 3
    attack=()
    case $scenario in
      none) ;;
      flood)
        nice -n 19 "$bin" load --addr "$ADDR" -c 500 --socket-buffer 16384 --faults flood --fault-share 1 \
          --fault-cycles 1 -d 12s --drain 0s --idle-timeout 30s --json \
          >"$out/flood-$server.json" 2>&1 &
        attack+=($!) ;;
      mix)
        nice -n 19 bash -c "$(declare -f holders); holders 5000 12 $ADDR 16384" >"$out/holders-$server.txt" &
        attack+=($!)
        nice -n 19 "$bin" load --addr "$ADDR" -c 5000 --connect-rate 5000 --socket-buffer 16384 \
          --faults flood --fault-share 1 --fault-cycles 1 -d 12s --drain 0s --idle-timeout 30s \
          --json >"$out/mix-flood-$server.json" 2>&1 &
        attack+=($!) ;;
      *) echo "unknown scenario $scenario"; exit 2 ;;
    esac
    for p in "${attack[@]}"; do wait "$p" || true; done
    wait "$healthy" || true
    kill "$sampler"; wait "$sampler" 2>/dev/null || true
    peak=$(kb "$PID" VmHWM)
    if [ "$server" != tokio ]; then
      # The reactors' turn histogram: how long the longest turns took.
      metrics=$(sed -n 's|.*metrics on \(http://.*\)$|\1|p' "$out/$server.log" | head -n1)
      curl -s "$metrics" | grep '^tabecho_reactor_turn_seconds_bucket' >"$out/turns-$server-$scenario.txt" || true
    fi
    kernel=$(( ($(cat "$out/kernel-peak") - base) * 4096 / 1048576 ))
    kill "$PID"; wait "$PID" 2>/dev/null || true
    python3 - "$out/healthy-$server-$scenario.json" "$server" "$scenario" "$kernel" \
      $(( (peak - before) / 1024 )) <<'PY'
import json, sys
path, server, scenario, kernel, rss = sys.argv[1:]
try:
    r = json.load(open(path))
except ValueError:
    print(f"{server:9} {scenario:6} the healthy load printed no report (see {path})")
    sys.exit()
ms = lambda us: f"{us / 1000:.1f}"
print(f"{server:9} {scenario:6} {ms(r['p50_us']):>9} {ms(r['p99_us']):>9} {ms(r['p999_us']):>9} "
      f"{ms(r['max_us']):>9} {r['lost']:>6} {kernel:>12} {rss:>10}")
PY
    if [ -f "$out/holders-$server.txt" ] && [ "$scenario" = mix ]; then
      sed 's/^/          /' "$out/holders-$server.txt"
    fi
  done
done
