#!/usr/bin/env bash
# c100k.sh: CONNECTIONS concurrent connections on one machine, past one process's
# descriptor limit: several `tabecho serve --reuseport` processes share one port (the
# kernel spreads connections over them) and several `tabecho load` processes connect
# from distinct source addresses (127.N.0.2, 127.N.0.3, ...).
#
#   scripts/c100k.sh [CONNECTIONS]     (default 100000; develop with 12000)
#
# SERVERS = ceil(CONNECTIONS / 16,700) (6 for 100,000; at least 2), each holding about
# 16,700 connections, under its 20,000 descriptors. LOADS = ceil(CONNECTIONS / (90% of
# half the ephemeral ports)) (8 x 12,500 for 100,000 here): a load binds its source
# address with port 0 before connecting, and Linux gives bind() the odd ports of
# ip_local_port_range first (inet_csk_find_open_port; connect() favours the even ones).
# Past that half (14,116 here) every bind scans all the odd ports before trying an even
# one: measured here, 7 ms per bind instead of 10 to 16 us, which stalls a load's only
# thread (a first run with 6 loads of 16,667 got connect timeouts and lost frames from
# ~14,100 connections per load on). C100K_SERVERS=N and C100K_LOADS=N override counts.
# 1. Trickle: servers with --idle-timeout 30s; the loads ramp every connection up in
#    ~20 s (--connect-rate), warm up 25 s, then send CONNECTIONS/10 frames/s in total
#    (each connection one frame per ~10 s, well inside the idle timeout) for 20 s
#    measured. Every load must be verified: 0 lost, 0 corrupt, 0 connect failures.
# 2. Idle: fresh servers with --idle-timeout 30s; the loads hold CONNECTIONS idle
#    connections (`load --idle`, same ramp, -d 60s) and report when the servers closed
#    them: every close must come 30 s to 30 s + 5% + 1 s (32.5 s) after its connect, as
#    the load sees it (less 50 ms at the low end: see close_min_ms).
# In both, a sampler reads each server's /proc/PID/fd (connections = descriptors less
# those it held before), VmRSS, `ss` (established on the port), /proc/net/sockstat and
# Slab in /proc/meminfo every ~0.5 s: the servers must hold all CONNECTIONS at once.
# RSS per connection = (sum of the servers' VmHWM - sum of their VmRSS before) /
# CONNECTIONS: user-space memory only (scripts/idle_memory.sh: ~111 B for one process).
# Prints a summary table and PASS (exit 0) or FAIL (exit 1); exit 2 if it cannot run.
#
# What it assumes of the machine (checked at the start, printed):
# - `ulimit -n` of at least a server's share + 2% + 64 (20,000 here: the hard limit). A
#   server's connection limit is its descriptor limit less 32 (19,968), and the kernel's
#   spread of ~16,700 per server varies by about 1%.
# - net.ipv4.ip_local_port_range of at least twice a load's share (32768-60999: 28,232
#   ports, 14,116 odd ones; see LOADS above). The loads bind before connecting, so a
#   port in TIME-WAIT on that source address is taken whatever the destination: each
#   phase picks a /24 (127.N.0.0, N from 10) with no socket on it, so a rerun within
#   60 s (the trickle's client-side TIME-WAIT) still finds free ports.
# - fs.file-max above 2 x CONNECTIONS (both ends are on this machine; 2,466,186 here).
# - net.core.somaxconn caps each listener's backlog (4,096 here); the ramp is ~5,000
#   connects/s over SERVERS listeners, far from filling it.
# - net.ipv4.tcp_max_orphans (131,072 here): when a load exits, its connections close at
#   once; beyond the limit the kernel resets orphans instead of finishing their FIN,
#   which changes nothing measured here. net.ipv4.tcp_max_tw_buckets likewise: the idle
#   phase leaves CONNECTIONS server-side TIME-WAIT sockets (loopback only).
# Runs about 2.5 minutes at 100,000. Traffic is on loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
conns=${1:-100000}
case $conns in '' | *[!0-9]*) echo "usage: scripts/c100k.sh [CONNECTIONS]" >&2; exit 2 ;; esac
[ "$conns" -ge 100 ] || { echo "CONNECTIONS must be at least 100" >&2; exit 2; }

cargo build --release --quiet
out=$target_dir/c100k
mkdir -p "$out"
raise_nofile 20000

read -r port_lo port_hi < /proc/sys/net/ipv4/ip_local_port_range
ports=$(( port_hi - port_lo + 1 ))
# A server's share of ~16,700 keeps the kernel's spread under its 19,968-connection
# limit with margin; a load's share stays in the odd half of the ports (see above).
servers=${C100K_SERVERS:-$(( (conns + 16699) / 16700 ))}
[ "$servers" -ge 2 ] || servers=2
per_source=$(( ports * 9 / 20 ))
loads=${C100K_LOADS:-$(( (conns + per_source - 1) / per_source ))}
[ "$loads" -ge 2 ] || loads=2
ramp=20           # seconds for the whole connection ramp
window=20         # the trickle phase's measured seconds
idle_timeout=30   # seconds, both phases
idle_hold=60      # the idle phase's -d: ramp + idle timeout + slack
rate=$(( conns / 10 ))   # frames/s in total: each connection one frame per ~10 s
# The load's clock for a connection starts when its loop sees the connect complete,
# which on a busy machine can be after the server's accept started the idle clock; and
# its histogram (3 significant digits) reports any close in 29,984-29,999 ms as 29,984.
# So the lower bound is 50 ms short of the timeout: half the server's 100 ms wheel tick
# at this timeout, so a reap one tick early still fails.
close_min_ms=$(( idle_timeout * 1000 - 50 ))
close_max_ms=$(( idle_timeout * 1000 * 105 / 100 + 1000 ))

# share I: connections of load I (0-based); the last takes the remainder.
share() {
  local per=$(( conns / loads ))
  if [ "$1" -eq $(( loads - 1 )) ]; then echo $(( conns - per * (loads - 1) )); else echo "$per"; fi
}

# --- what the machine gives, checked ---
file_max=$(cat /proc/sys/fs/file-max)
somaxconn=$(cat /proc/sys/net/core/somaxconn)
orphans=$(cat /proc/sys/net/ipv4/tcp_max_orphans)
fd_limit=$(ulimit -n)
biggest=$(share $(( loads - 1 )))
server_share=$(( (conns + servers - 1) / servers ))
echo "c100k: $conns connections: $servers servers (~$server_share each) + $loads loads" \
  "(~$biggest each), fd limit $fd_limit"
echo "sysctl: ip_local_port_range $port_lo-$port_hi ($ports ports per source), somaxconn $somaxconn," \
  "fs.file-max $file_max, tcp_max_orphans $orphans"
{ [ "$fd_limit" -ge $(( server_share * 102 / 100 + 64 )) ] && [ "$fd_limit" -ge $(( biggest + 64 )) ]; } ||
  { echo "ulimit -n $fd_limit: too few for ~$server_share per server, $biggest per load" >&2; exit 2; }
[ "$biggest" -le $(( ports / 2 )) ] ||
  echo "note: $biggest connections per source address is past the odd half of the ports: binds will be slow"
[ "$file_max" -ge $(( 2 * conns + 10000 )) ] || { echo "fs.file-max $file_max < 2 x $conns + 10000" >&2; exit 2; }
[ "$orphans" -ge "$conns" ] || echo "note: tcp_max_orphans $orphans < $conns: closing loads may see resets"

pids=()
sampling="$out/sampling"
cleanup() {
  rm -f "$sampling"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# pick_sources: sets SRC to a free /24 prefix (127.N.0) with no socket on it at all.
pick_sources() {
  local n
  for n in $(seq 10 250); do
    if [ "$(ss -Htan "src 127.$n.0.0/24" | wc -l)" -eq 0 ]; then SRC=127.$n.0; return 0; fi
  done
  echo "no free 127.N.0.0/24 for the loads' sources" >&2
  exit 2
}

# kb PID FIELD, nfd PID: a /proc/PID/status field in kB, the descriptors PID holds;
# 0 for a process that is gone or a zombie (stop_servers then fails the phase).
# alive PID: running, not a zombie (a zombie's status has no VmRSS).
kb() {
  { cat "/proc/$1/status" 2>/dev/null || true; } |
    awk -v k="$2" '$1 == k":" { v = $2 } END { print v + 0 }'
}
nfd() { { ls "/proc/$1/fd" 2>/dev/null || true; } | wc -l; }
alive() { grep -q '^VmRSS:' "/proc/$1/status" 2>/dev/null; }

# start_servers PHASE: SERVERS servers with --reuseport on one port; sets SPIDS, PORT,
# BASEFD (descriptors each held before any connection) and RSS0 (sum of VmRSS, kB).
start_servers() {
  local phase=$1 i log
  SPIDS=()
  PORT=""
  for i in $(seq 0 $(( servers - 1 ))); do
    log="$out/$phase-server$i.log"
    rm -f "$out/$phase-server$i.json"
    start_ready "$phase server $i" "$log" "$bin" serve --listen "127.0.0.1:${PORT:-0}" \
      --reuseport --idle-timeout ${idle_timeout}s --summary-json "$out/$phase-server$i.json"
    SPIDS+=("$PID")
    pids+=("$PID")
    PORT=${ADDR##*:}
  done
  sleep 0.3
  BASEFD=()
  RSS0=0
  for p in "${SPIDS[@]}"; do
    BASEFD+=("$(nfd "$p")")
    RSS0=$(( RSS0 + $(kb "$p" VmRSS) ))
  done
}

# sampler FILE: every ~0.5 s while $sampling exists, one line: ms since start,
# connections the servers hold (sum), established on the port (ss), sum of VmRSS (kB),
# sockstat TCP mem (pages), Slab (kB), then each server's connections. The first time
# the servers hold every connection, a copy of /proc/slabinfo goes to FILE.slab.
sampler() {
  local file=$1 t0 total est rss per c i
  t0=$(date +%s%N)
  : >"$file"
  while [ -e "$sampling" ]; do
    total=0 rss=0 per=""
    for i in "${!SPIDS[@]}"; do
      c=$(( $(nfd "${SPIDS[$i]}") - BASEFD[i] ))
      [ "$c" -ge 0 ] || c=0    # a server that died
      total=$(( total + c ))
      per="$per $c"
      rss=$(( rss + $(kb "${SPIDS[$i]}" VmRSS) ))
    done
    # src with the address: a load may bind the same port number on its own address.
    est=$(ss -Htn state established "( src 127.0.0.1:$PORT )" | wc -l)
    if [ "$total" -ge "$conns" ] && [ ! -e "$file.slab" ]; then cp /proc/slabinfo "$file.slab"; fi
    echo "$(( ($(date +%s%N) - t0) / 1000000 )) $total $est $rss" \
      "$(awk '/^TCP:/ { print $NF }' /proc/net/sockstat)" \
      "$(awk '/^Slab:/ { print $2 }' /proc/meminfo)$per" >>"$file"
    sleep 0.5
  done
}

# stop_servers PHASE: SIGTERM each server, wait, and read its shutdown line: sets
# ACCEPTED (sum), REJECTED (sum), REAPED (sum of idle reaps), HWM (sum of VmHWM, kB).
stop_servers() {
  local phase=$1 i p line
  HWM=0
  for i in "${!SPIDS[@]}"; do
    alive "${SPIDS[$i]}" || fail "$phase server $i died before the end"
    HWM=$(( HWM + $(kb "${SPIDS[$i]}" VmHWM) ))
  done
  for p in "${SPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${SPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ACCEPTED=0 REJECTED=0 REAPED=0
  for i in "${!SPIDS[@]}"; do
    # The shutdown summary (--summary-json), one flat JSON object: "name":value,...
    line=$(cat "$out/$phase-server$i.json" 2>/dev/null || true)
    [ -n "$line" ] || { fail "$phase server $i: no shutdown summary"; continue; }
    local n
    n=${line#*\"accepted\":}; ACCEPTED=$(( ACCEPTED + ${n%%[,\}]*} ))
    n=${line#*\"rejected\":}; REJECTED=$(( REJECTED + ${n%%[,\}]*} ))
    n=${line#*\"reaped_idle\":}; REAPED=$(( REAPED + ${n%%[,\}]*} ))
  done
}

# peak FILE SLAB0 TCPMEM0: from the samples, the first with the most connections held:
# prints "held est seconds split(min-max) kernel-slab-B/conn tcp-mem-pages" and sets
# nothing. The split lists each server's connections.
peak() {
  awk -v n="$conns" -v slab0="$2" -v mem0="$3" '
    $2 > best { best = $2; line = $0 }
    END {
      nf = split(line, f, " ")
      split_s = ""; lo = -1; hi = 0
      for (i = 7; i <= nf; i++) {
        split_s = split_s (i > 7 ? "/" : "") f[i]
        if (lo < 0 || f[i] < lo) lo = f[i]
        if (f[i] > hi) hi = f[i]
      }
      printf "%d %d %.1f %s %d %d %.0f %d\n", f[2], f[3], f[1] / 1000, split_s, lo, hi,
        (f[6] - slab0) * 1024 / n, f[5] - mem0
    }' "$1"
}

# check_loads PHASE FILE...: prints one line per load and checks the JSON; on stdout last
# "SUMS sent answered lost corrupt failed established closes close_min close_p50 close_max".
check_loads() {
  python3 - "$@" <<'PY'
import json, sys
phase, files = sys.argv[1], sys.argv[2:]
s = dict(sent=0, answered=0, lost=0, corrupt=0, failed=0, est=0, closes=0)
cmin, cp50, cmax, bad = None, [], None, 0
for i, f in enumerate(files):
    try:
        r = json.load(open(f))
    except Exception as e:
        print(f"   load {i}: no report ({e})", file=sys.stderr); bad += 1; continue
    s["sent"] += r["frames_sent"]; s["answered"] += r["frames_answered"]
    s["lost"] += r["lost"]; s["corrupt"] += r["corrupt"]
    s["failed"] += r["connect_failed"]; s["est"] += r["established"]
    s["closes"] += r["server_closes"]
    line = (f"   load {i}: {r['established']}/{r['connections']} established, "
            f"{r['connect_failed']} failed, verified {r['verified']}")
    if r["idle"]:
        line += (f", {r['server_closes']} server closes {r['close_after_min_ms']} ms"
                 f" (p50 {r['close_after_p50_ms']}) to {r['close_after_max_ms']} ms after connect")
        if r["server_closes"]:
            cmin = r["close_after_min_ms"] if cmin is None else min(cmin, r["close_after_min_ms"])
            cmax = r["close_after_max_ms"] if cmax is None else max(cmax, r["close_after_max_ms"])
            cp50.append(r["close_after_p50_ms"])
    else:
        line += (f", {r['frames_sent']} sent, {r['frames_answered']} answered, "
                 f"{r['lost']} lost, {r['corrupt']} corrupt, p99 {r['p99_us'] / 1000:.1f} ms")
    if r["errors"]:
        line += f", errors {r['errors']}"
    if r["limit_note"]:
        line += f", note: {r['limit_note']}"
    print(line, file=sys.stderr)
    if not r["verified"] or r["connect_failed"] or r["established"] != r["connections"]:
        bad += 1
cp50.sort()
med = cp50[len(cp50) // 2] if cp50 else -1
print("SUMS", s["sent"], s["answered"], s["lost"], s["corrupt"], s["failed"], s["est"],
      s["closes"], -1 if cmin is None else cmin, med, -1 if cmax is None else cmax, bad)
PY
}

# slab_growth BEFORE AFTER: the slab caches that grew most between two copies of
# /proc/slabinfo, in bytes per connection (active objects x object size; both ends).
slab_growth() {
  awk -v n="$conns" '
    FNR == NR { if (FNR > 2) before[$1] = $2; next }
    FNR > 2 { d = ($2 - before[$1]) * $4; if (d > 0) printf "%d %s\n", d, $1 }' "$1" "$2" |
    sort -rn | head -n 7 |
    awk -v n="$conns" '{ s = s sprintf("%s%s %.0f", NR > 1 ? ", " : "", $2, $1 / n); t += $1 }
      END { printf "   slab growth per connection, bytes: %s (these %.0f)\n", s, t / n }'
  # Measured apart: listing 10,000 descriptors once adds 692 B of proc_inode_cache and
  # 193 B of dentry per descriptor; a socket itself has one dentry (192 B).
  echo "   (proc_inode_cache and part of dentry are the sampler's own ls /proc/PID/fd)"
}

FAIL=0          # any check of the run failed
PHASE_FAIL=0    # a check of the current phase failed
fail() { echo "   FAIL: $*"; FAIL=1; PHASE_FAIL=1; }
rows=()

# run_phase PHASE: starts servers and loads, samples, checks; appends a summary row.
run_phase() {
  local phase=$1 i n lpids=() files=() rc t0 slab0 mem0 sums
  PHASE_FAIL=0
  start_servers "$phase"
  pick_sources
  echo
  echo "== $phase: $servers servers on 127.0.0.1:$PORT, $loads loads from $SRC.2..$(( loads + 1 ))," \
    "servers' RSS before: $RSS0 kB"
  rm -f "$out/$phase-samples.txt.slab"
  cp /proc/slabinfo "$out/$phase-slabinfo-before.txt"
  slab0=$(awk '/^Slab:/ { print $2 }' /proc/meminfo)
  mem0=$(awk '/^TCP:/ { print $NF }' /proc/net/sockstat)
  touch "$sampling"
  sampler "$out/$phase-samples.txt" &
  local spid=$!
  pids+=("$spid")
  t0=$(date +%s)
  for i in $(seq 0 $(( loads - 1 ))); do
    n=$(share "$i")
    local crate=$(( (n + ramp - 1) / ramp ))
    files+=("$out/$phase-load$i.json")
    if [ "$phase" = trickle ]; then
      "$bin" load --addr "127.0.0.1:$PORT" --source "$SRC.$(( i + 2 ))" -c "$n" -t 1 \
        --connect-rate "$crate" --warmup $(( ramp + 5 ))s --rate $(( rate * n / conns )) \
        -d ${window}s --json >"$out/$phase-load$i.json" 2>"$out/$phase-load$i.err" &
    else
      "$bin" load --addr "127.0.0.1:$PORT" --source "$SRC.$(( i + 2 ))" -c "$n" -t 1 \
        --connect-rate "$crate" --idle -d ${idle_hold}s \
        --json >"$out/$phase-load$i.json" 2>"$out/$phase-load$i.err" &
    fi
    lpids+=($!)
    pids+=($!)
  done
  for i in "${!lpids[@]}"; do
    rc=0
    wait "${lpids[$i]}" || rc=$?
    [ "$rc" -eq 0 ] || fail "load $i exited $rc ($(tail -n1 "$out/$phase-load$i.err"))"
  done
  echo "   loads done after $(( $(date +%s) - t0 )) s"
  rm -f "$sampling"
  wait "$spid" || true
  stop_servers "$phase"

  sums=$(check_loads "$phase" "${files[@]}" | sed -n 's/^SUMS //p')
  local sent answered lost corrupt failed est closes cmin cp50 cmax bad
  read -r sent answered lost corrupt failed est closes cmin cp50 cmax bad <<<"$sums"
  local held ssest at split lo hi slab_b tcpmem
  read -r held ssest at split lo hi slab_b tcpmem <<<"$(peak "$out/$phase-samples.txt" "$slab0" "$mem0")"
  local per_conn=$(( (HWM - RSS0) * 1024 / conns ))
  echo "   peak: servers held $held connections at once ($ssest established on the port by ss)," \
    "${at} s after the loads started; per server $split"
  echo "   servers: accepted $ACCEPTED, rejected $REJECTED, reaped idle $REAPED;" \
    "RSS $RSS0 kB before, $HWM kB peak (sum of VmHWM): $per_conn B per connection"
  echo "   kernel at the peak: Slab +$slab_b B per connection (both ends, whole machine)," \
    "sockstat TCP mem $(( tcpmem >= 0 ? tcpmem : 0 )) pages more than before"
  [ -e "$out/$phase-samples.txt.slab" ] && slab_growth "$out/$phase-slabinfo-before.txt" "$out/$phase-samples.txt.slab"
  [ "$bad" -eq 0 ] || fail "$bad loads not verified or short of connections"
  [ "$held" -eq "$conns" ] || fail "servers held at most $held of $conns connections at once"
  [ "$est" -eq "$conns" ] || fail "loads established $est of $conns"
  [ "$failed" -eq 0 ] || fail "$failed connect failures"
  [ "$REJECTED" -eq 0 ] || fail "servers rejected $REJECTED connections"
  [ "$ACCEPTED" -eq "$conns" ] || fail "servers accepted $ACCEPTED, not $conns"
  local timing="-"
  if [ "$phase" = trickle ]; then
    { [ "$lost" -eq 0 ] && [ "$corrupt" -eq 0 ]; } || fail "$lost lost, $corrupt corrupt"
    { [ "$answered" -eq "$sent" ] && [ "$sent" -gt 0 ]; } || fail "$answered answered of $sent sent"
    [ "$closes" -eq 0 ] || fail "servers closed $closes connections during the trickle"
  else
    { [ "$closes" -eq "$conns" ] && [ "$REAPED" -eq "$conns" ]; } ||
      fail "servers closed $closes (reaped $REAPED) of $conns idle connections"
    { [ "$cmin" -ge "$close_min_ms" ] && [ "$cmax" -le "$close_max_ms" ]; } ||
      fail "closes $cmin to $cmax ms after connect, outside $close_min_ms to $close_max_ms"
    timing="$cmin-$cmax ms (p50 $cp50)"
  fi
  local result=PASS
  [ "$PHASE_FAIL" -eq 0 ] || result=FAIL
  rows+=("$(printf '%-8s %11s %-24s %13s %-28s %9s %s' "$phase" "$held/$conns" "$lo-$hi" \
    "$lost/$corrupt" "$timing" "$per_conn B" "$result")")
}

run_phase trickle
run_phase idle

echo
printf '%-8s %11s %-24s %13s %-28s %9s %s\n' phase connections "per server (min-max)" \
  "lost/corrupt" "close after connect" "RSS/conn" result
for r in "${rows[@]}"; do echo "$r"; done
[ "${#rows[@]}" -eq 2 ] || fail "only ${#rows[@]} of 2 phases finished"
if [ "$FAIL" -eq 0 ]; then echo PASS; else echo FAIL; exit 1; fi
