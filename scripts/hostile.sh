#!/usr/bin/env bash
# hostile.sh: what hostile clients make a server hold, tabecho beside the tokio bench
# server (benches/tokio-echo), one after the other in one run, same clients.
#
#   scripts/hostile.sh [FLOODERS] [MIX]     (defaults 500 and 5000)
#
# 1. FLOODERS connections that pipeline empty frames (`\t`, 12 bytes of reply each) as
#    fast as the socket takes them and never read (`tabecho load --faults flood`), for
#    8 s: the server's peak RSS growth per flooding connection.
# 2. The mix: MIX flooders, MIX partial-frame holders (65,535 bytes without a TAB each,
#    held; a small Python helper) and 100 healthy connections running `tabecho load` at
#    pipeline 16 for 20 s: peak RSS growth against tabecho's 256 MiB buffer budget, the
#    healthy load's replies/s, lost and corrupt, and how the hostile ones were closed.
# Both servers run with a 30 s idle timeout, so the hostile connections stay for the
# whole run (the default 2 s would reap them, which makes the attack weaker).
# Traffic is on loopback only; the processes hold at most MIX + 100 + 64 descriptors each.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
flooders=${1:-500}
mix=${2:-5000}

cargo build --release --quiet
cargo build --release --quiet --manifest-path benches/tokio-echo/Cargo.toml
bin=target/release/tabecho
tokio=benches/tokio-echo/target/release/tokio-echo
out=target/hostile
mkdir -p "$out"
ulimit -n 20000

trap stop_servers EXIT

# start NAME: starts a server on 127.0.0.1:0 with a 30 s idle timeout; sets PID and ADDR.
start() {
  case $1 in
    tabecho) start_server "$1" "$out/$1.log" "$bin" serve --listen 127.0.0.1:0 --idle-timeout 30s ;;
    tokio) start_server "$1" "$out/$1.log" "$tokio" 127.0.0.1:0 30 ;;
  esac
}

echo "== 1. $flooders flooding connections that never read, 8 s"
printf '%-8s %12s %12s %14s\n' server "rss before" "rss peak" "per flooder"
for server in tabecho tokio; do
  start $server
  before=$(kb "$PID" VmRSS)
  "$bin" load --addr "$ADDR" -c "$flooders" --connect-rate 5000 --faults flood --fault-share 1 \
    --fault-cycles 1 -d 8s --drain 0s --idle-timeout 30s --json >"$out/flood-$server.json" 2>&1 || true
  peak=$(kb "$PID" VmHWM)
  printf '%-8s %9s kB %9s kB %11s B\n' $server "$before" "$peak" $(( (peak - before) * 1024 / flooders ))
  kill "$PID"; wait "$PID" 2>/dev/null || true
done

echo
echo "== 2. $mix flooders + $mix partial-frame holders + 100 healthy connections (pipeline 16), 20 s"
for server in tabecho tokio; do
  start $server
  before=$(kb "$PID" VmRSS)
  holders "$mix" 22 "$ADDR" >"$out/holders-$server.txt" &
  hp=$!
  "$bin" load --addr "$ADDR" -c "$mix" --connect-rate 5000 --faults flood --fault-share 1 \
    --fault-cycles 1 -d 22s --drain 0s --idle-timeout 30s --json >"$out/mix-flood-$server.json" 2>&1 &
  fp=$!
  sleep 2
  "$bin" load --addr "$ADDR" -c 100 -p 16 -d 20s --json >"$out/mix-healthy-$server.json" 2>&1 || true
  peak=$(kb "$PID" VmHWM)
  wait $hp || true
  wait $fp || true
  echo "-- $server: rss $before kB before, $peak kB peak: growth $(( (peak - before) / 1024 )) MiB"
  python3 - "$out/mix-healthy-$server.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"   healthy: {r['replies_per_sec']:.0f} replies/s, {r['frames_sent']} sent, {r['lost']} lost, {r['corrupt']} corrupt, p99 {r['p99_us']/1000:.1f} ms")
PY
  sed 's/^/   /' "$out/holders-$server.txt"
  if [ $server = tabecho ]; then
    kill "$PID"; wait "$PID" 2>/dev/null || true
    grep -E "memory budget|pressure over|shutdown:" "$out/$server.log" | sed 's/^/   log: /'
  else
    kill "$PID"; wait "$PID" 2>/dev/null || true
  fi
done
