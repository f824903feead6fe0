#!/usr/bin/env bash
# cluster.sh: HAProxy (deploy/haproxy.cfg) in front of three tabecho instances; one
# instance dies in the middle of a verified load, and the script checks what the clients
# and HAProxy see.
#
#   scripts/cluster.sh              (CLUSTER_PORT=18085 scripts/cluster.sh if 8085 is taken)
#
# Environment: CLUSTER_PORT, HAProxy's port on 127.0.0.1 [8085]; the instances listen on
# the next three ports (TABECHO_PORT1..3 override them). A port already taken is an error.
# HAProxy (and socat, to read its stats socket) are installed with apt-get if missing.
#
# The run, all on loopback, about 25 s:
#  1. Three `tabecho serve --idle-timeout 10s` (10 s, so the load's connections are not
#     reaped between frames) and HAProxy, health-checking each with a frame of the
#     protocol every 500 ms (DOWN after 2 failures, UP after 2 successes).
#  2. Load A through HAProxy: 300 connections, an open loop of 9,000 frames/s (30 per
#     connection per second), pipeline 4, 20 s, every reply verified. HAProxy spreads
#     the connections over the instances (leastconn); its stats socket says how many,
#     C, are on the victim, tabecho2.
#  3. At 5 s the victim is stopped (SIGSTOP), 0.4 s later SIGKILLed.
#  4. HAProxy must mark it DOWN within 3 s of the SIGSTOP (stats polled every 100 ms).
#  5. Load B (30 connections, 3 s) while it is down: verified, nothing lost, and every
#     one of its sessions went to the two live instances (the victim's `stot` unchanged).
#  6. The victim restarts on its port; HAProxy must mark it UP again (timed), and load C
#     (30 connections, 3 s) must be verified with the victim's `stot` rising.
#  7. When load A ends, its report must show:
#     - established 300, none failed; corrupt 0, unexpected replies 0;
#     - server_closes = C: exactly the victim's connections were closed by the peer,
#       none on the live instances;
#     - lost = 4 x C, exactly.
#     Why the last is exact: `tabecho load` never reconnects a healthy connection, and
#     counts a frame lost when it is in flight at a close or at the end of the drain,
#     or when a later frame's reply came first. Stopped for 0.4 s, the victim answers
#     nothing while the open loop brings each of its C connections to the pipeline's
#     limit, 4 frames in flight (a frame is due every 33 ms); the SIGKILL then closes
#     them with exactly 4 x C frames unanswered. So lost = 4 x C if and only if the
#     connections on the live instances lost nothing (a loss there can only add).
#     A plain SIGKILL alone would leave 0 to 4 frames in flight per connection, and the
#     bound lost <= 4 x C could hide a loss elsewhere. The STOP also makes the DOWN
#     timing conservative: it is measured from the moment the victim stopped answering.
#  Both the victim's SIGKILL and HAProxy's view are printed with the measured times.
#
# Exit status: 0 every check passed; 1 a check failed (each is printed, ok or FAIL);
# 2 the setup failed (build, install, a port taken, a process that would not start).
# Every process started here is stopped on exit. Logs and the loads' JSON reports are
# left in target/cluster/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

port=${CLUSTER_PORT:-8085}
ports=("${TABECHO_PORT1:-$((port + 1))}" "${TABECHO_PORT2:-$((port + 2))}" "${TABECHO_PORT3:-$((port + 3))}")
conns=300 rate=9000 pipeline=4 duration=20s stop_secs=0.4
victim=2 # tabecho2: the instance killed

die() { echo "cluster: $*" >&2; exit 2; }

# need PROGRAM PACKAGE: installs PACKAGE with apt-get if PROGRAM is missing, and says so.
need() {
  command -v "$1" >/dev/null && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "cluster: $1 is missing; installing it: $sudo apt-get install -y $2" >&2
  $sudo apt-get install -y "$2" >/dev/null || die "could not install $2"
}
need haproxy haproxy
need socat socat

for p in "$port" "${ports[@]}"; do
  if [ -n "$(ss -Hltn "sport = :$p")" ]; then
    die "127.0.0.1:$p is taken (ss -ltnp 'sport = :$p' says by whom); choose another CLUSTER_PORT"
  fi
done

cargo build --release --quiet || die "the build failed"
bin=target/release/tabecho
out=target/cluster
mkdir -p "$out"
run=$(mktemp -d) # the stats socket: a short path (sun_path holds 108 bytes)
sock=$run/haproxy.sock

tabecho_pids=("" "" "")
haproxy_pid=""
cleanup() {
  local p
  for p in "${tabecho_pids[@]}" $haproxy_pid; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  for p in "${tabecho_pids[@]}" $haproxy_pid; do
    [ -n "$p" ] && wait "$p" 2>/dev/null || true
  done
  jobs -p | xargs -r kill 2>/dev/null || true # a load still running after a failure
  rm -rf "$run"
}
trap cleanup EXIT

# start_tabecho I: starts instance I (1..3) on its port, waits until it listens.
start_tabecho() {
  local log="$out/tabecho$1.log"
  : >"$log"
  "$bin" serve --listen "127.0.0.1:${ports[$1 - 1]}" --idle-timeout 10s 2>>"$log" &
  tabecho_pids[$1 - 1]=$!
  listening_addr "$log" 10 >/dev/null || die "tabecho$1 did not start (see $log)"
}

# hastat SERVER COLUMN: one column (by its name in the CSV header) of SERVER's row in
# HAProxy's `show stat` (SERVER: tabecho1..3, or FRONTEND).
hastat() {
  echo "show stat" | socat -t 2 - "UNIX-CONNECT:$sock" 2>/dev/null | awk -F, -v sv="$1" -v col="$2" '
    NR == 1 { sub(/^# /, ""); for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
    $2 == sv { print $c }'
}

# until_status SERVER PATTERN SECONDS: polls SERVER's status every 100 ms until it
# matches PATTERN (an awk regex); prints the seconds waited, fails after SECONDS.
now_ns() { date +%s%N; }
until_status() {
  local start status
  start=$(now_ns)
  while true; do
    status=$(hastat "$1" status)
    if echo "$status" | awk -v re="$2" '$0 ~ re { ok = 1 } END { exit !ok }'; then
      awk -v s="$start" -v n="$(now_ns)" 'BEGIN { printf "%.1f\n", (n - s) / 1e9 }'
      return 0
    fi
    if [ $(( ($(now_ns) - start) / 1000000 )) -gt $(( $3 * 1000 )) ]; then
      echo "$status"
      return 1
    fi
    sleep 0.1
  done
}

# json FILE KEY: one field of a load's JSON report.
json() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

failed=0
# check DESCRIPTION TEST...: runs TEST, prints ok or FAIL with the description.
check() {
  local what=$1
  shift
  if "$@"; then
    echo "ok    $what"
  else
    echo "FAIL  $what"
    failed=1
  fi
}

echo "== cluster: HAProxy on 127.0.0.1:$port, tabecho1..3 on ${ports[*]}"
for i in 1 2 3; do start_tabecho $i; done
CLUSTER_RUN=$run CLUSTER_PORT=$port TABECHO_PORT1=${ports[0]} TABECHO_PORT2=${ports[1]} \
  TABECHO_PORT3=${ports[2]} haproxy -db -f deploy/haproxy.cfg >"$out/haproxy.log" 2>&1 &
haproxy_pid=$!
for i in 1 2 3; do
  until_status tabecho$i '^UP$' 10 >/dev/null || die "tabecho$i is not UP in HAProxy (see $out/haproxy.log)"
done
echo "HAProxy: tabecho1..3 UP"

echo
echo "== load A: $conns connections, $rate frames/s, pipeline $pipeline, $duration"
"$bin" load --addr "127.0.0.1:$port" -c $conns -p $pipeline --rate $rate -d $duration \
  --json >"$out/load-a.json" 2>"$out/load-a.log" &
load_a=$!
for _ in $(seq 100); do
  [ "$(hastat FRONTEND scur)" = "$conns" ] && break
  sleep 0.1
done
sleep 4
declare -a scur
for i in 1 2 3; do scur[$i]=$(hastat tabecho$i scur); done
echo "sessions on tabecho1..3: ${scur[1]} ${scur[2]} ${scur[3]}"
c=${scur[$victim]}
check "all $conns load connections are proxied (${scur[1]} + ${scur[2]} + ${scur[3]})" \
  test $(( scur[1] + scur[2] + scur[3] )) -eq $conns
check "the victim holds some of them (C = $c)" test "$c" -gt 0

victim_pid=${tabecho_pids[$victim - 1]}
disown "$victim_pid" # bash would print "Killed" for it; it is reaped all the same
stopped=$(now_ns)
kill -STOP "$victim_pid"
sleep $stop_secs
kill -KILL "$victim_pid"
killed=$(now_ns)
for _ in $(seq 50); do kill -0 "$victim_pid" 2>/dev/null || break; sleep 0.02; done
tabecho_pids[$victim - 1]=""
echo "tabecho$victim: SIGSTOP, SIGKILL $stop_secs s later"
if down=$(until_status tabecho$victim '^DOWN' 5); then
  since_stop=$(awk -v s="$stopped" -v k="$killed" -v d="$down" 'BEGIN { printf "%.1f", d + (k - s) / 1e9 }')
  echo "HAProxy: tabecho$victim DOWN ${down} s after the SIGKILL, ${since_stop} s after it stopped answering"
  check "marked DOWN within 3 s of the stop" awk -v t="$since_stop" 'BEGIN { exit !(t <= 3) }'
else
  check "marked DOWN within 3 s of the stop (status still: $down)" false
fi

echo
echo "== load B while tabecho$victim is down: 30 connections, 3 s"
declare -a before
for i in 1 2 3; do before[$i]=$(hastat tabecho$i stot); done
b_status=0
"$bin" load --addr "127.0.0.1:$port" -c 30 -p $pipeline --rate 1500 -d 3s --json \
  >"$out/load-b.json" 2>"$out/load-b.log" || b_status=$?
declare -a after
for i in 1 2 3; do after[$i]=$(hastat tabecho$i stot); done
echo "load B: $(json "$out/load-b.json" frames_sent) sent, $(json "$out/load-b.json" lost) lost, $(json "$out/load-b.json" corrupt) corrupt; new sessions on tabecho1..3: $(( after[1] - before[1] )) $(( after[2] - before[2] )) $(( after[3] - before[3] ))"
check "load B verified (exit $b_status, $(json "$out/load-b.json" established) of 30 established)" \
  test "$b_status" -eq 0 -a "$(json "$out/load-b.json" established)" -eq 30
check "load B's sessions all on the live instances, none on tabecho$victim" \
  test $(( after[victim] - before[victim] )) -eq 0 -a $(( after[1] + after[3] - before[1] - before[3] )) -eq 30

echo
echo "== tabecho$victim restarts on port ${ports[$victim - 1]}"
start_tabecho $victim
if up=$(until_status tabecho$victim '^UP$' 10); then
  echo "HAProxy: tabecho$victim UP ${up} s after the restart"
  check "marked UP again" true
else
  check "marked UP again (status still: $up)" false
fi
for i in 1 2 3; do before[$i]=$(hastat tabecho$i stot); done
c_status=0
"$bin" load --addr "127.0.0.1:$port" -c 30 -p $pipeline --rate 1500 -d 3s --json \
  >"$out/load-c.json" 2>"$out/load-c.log" || c_status=$?
for i in 1 2 3; do after[$i]=$(hastat tabecho$i stot); done
echo "load C: $(json "$out/load-c.json" frames_sent) sent, $(json "$out/load-c.json" lost) lost, $(json "$out/load-c.json" corrupt) corrupt; new sessions on tabecho1..3: $(( after[1] - before[1] )) $(( after[2] - before[2] )) $(( after[3] - before[3] ))"
check "load C verified (exit $c_status)" test "$c_status" -eq 0
check "tabecho$victim takes connections again (stot ${before[victim]} -> ${after[victim]})" \
  test "${after[victim]}" -gt "${before[victim]}"

echo
echo "== load A's report"
a_status=0
wait "$load_a" || a_status=$?
a=$out/load-a.json
python3 - "$a" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"connections {r['established']} established, {r['connect_failed']} failed; "
      f"frames {r['frames_sent']} sent, {r['frames_answered']} answered, {r['lost']} lost, "
      f"{r['corrupt']} corrupt, {r['unexpected']} unexpected")
print(f"server closes {r['server_closes']}; latency p50 {r['p50_us']/1000:.3f} ms, "
      f"p99 {r['p99_us']/1000:.3f} ms; errors {r['errors'] or 'none'}")
PY
check "load A exits 1 (frames lost on the victim's connections): exit $a_status" test "$a_status" -eq 1
check "load A: all $conns established, none failed" \
  test "$(json "$a" established)" -eq $conns -a "$(json "$a" connect_failed)" -eq 0
check "load A: corrupt 0, unexpected 0" \
  test "$(json "$a" corrupt)" -eq 0 -a "$(json "$a" unexpected)" -eq 0
check "load A: closed by the peer = C = $c (the victim's connections, no others)" \
  test "$(json "$a" server_closes)" -eq "$c"
check "load A: lost = $pipeline x C = $(( pipeline * c )) (the live instances' connections lost nothing)" \
  test "$(json "$a" lost)" -eq $(( pipeline * c ))
check "load A: errors only the closes (connection reset / broken pipe), if any" python3 -c '
import json, sys
errors = json.load(open(sys.argv[1]))["errors"]
sys.exit(any(k not in ("server: connection reset", "server: broken pipe") for k in errors))' "$a"

echo
if [ "$failed" -eq 0 ]; then
  echo "PASS"
else
  echo "FAIL (logs and reports in $out/)"
fi
exit "$failed"
