#!/usr/bin/env bash
# per-source.sh: one source tries to take every slot; --max-connections-per-source keeps
# it to its share, and another source loses nothing (docs/PROTOCOL.md, "Connections per
# source"; issue 21's system check).
#
#   scripts/per-source.sh [--reconnect] [ATTACK_CONNECTIONS] [LIMIT] [SECONDS]
#                                                  (defaults 19000 1000 40)
#
# - The server: release `tabecho serve --threads 2 --max-connections-per-source LIMIT
#   --metrics` on loopback, with the default 2 s idle timeout.
# - The attacker (examples/per_source_attack.rs), from 127.0.0.2: tries to hold
#   ATTACK_CONNECTIONS connections for SECONDS, each sending an empty frame every 1.5 s
#   (inside the idle timeout); it counts every refusal line it reads and every reply.
#   A refused connection is not tried again, unless --reconnect: then each refused slot
#   connects again every 1.5 s (about 12,000 refusals a second), a heavier attack.
# - The victim, once the attacker holds its share: `tabecho load --source 127.0.0.3` with
#   100 connections at 5,000 frames/s for 20 s, every reply verified.
# Checks: the victim loses nothing and is never refused (load exit 0, no error reply, no
# server close); the attacker never holds more than LIMIT at once; the refusals it read
# equal the server's tabecho_rejected_total{reason="per_source"}; no refusal is global.
# And, if the attacker kept its schedule (no frame 0.5 s late): it is served exactly LIMIT
# connections, all kept to the end, nothing owed lost, nothing unsettled. On a busy
# machine its own frames can leave late (late_frames); the server then reaps those
# connections as idle, as it should, and this is reported instead of checked.
# Descriptors: the attacker holds up to ATTACK_CONNECTIONS + 64 (ulimit -n must allow it;
# the hard limit here is 20000); the server about LIMIT + 100 + the refusals in flight.
# Traffic is on loopback only. Prints the numbers and PASS, or FAIL and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
reconnect=""
if [ "${1:-}" = --reconnect ]; then reconnect=yes; shift; fi
attack=${1:-19000}
limit=${2:-1000}
seconds=${3:-40}
victim_seconds=20
if [ "$seconds" -lt $((victim_seconds + 8)) ]; then
  echo "SECONDS must be at least $((victim_seconds + 8)): the victim runs $victim_seconds s inside the attack" >&2
  exit 2
fi
raise_nofile "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((attack + 64)) ]; then
  echo "ulimit -n is $(ulimit -n): the attacker needs $((attack + 64)) descriptors" >&2
  exit 2
fi

cargo build --release --quiet
cargo build --release --quiet --example per_source_attack
attacker=$target_dir/release/examples/per_source_attack
out=$target_dir/per-source
mkdir -p "$out"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
failures=0
check() { # check NAME OK? DETAIL
  if [ "$2" = 0 ]; then echo "ok:   $1 ($3)"; else echo "FAIL: $1 ($3)"; failures=$((failures + 1)); fi
}
# metric NAME LABEL: the sum over the reactors of the series of NAME whose labels hold LABEL.
metric() {
  curl -fs "http://$metrics/metrics" \
    | awk -v name="$1" -v label="$2" 'index($0, name "{") == 1 && index($0, label) { s += $NF } END { printf "%d\n", s }'
}
# field KEY FILE: the value of "KEY":VALUE in a one-line JSON object, or of KEY=VALUE.
field() { grep -o -E "\"?$1\"?[:=][^,} ]*" "$2" | head -n1 | sed -E 's/.*[:=]//; s/"//g'; }

command -v curl >/dev/null || { echo "curl is needed (apt-get install curl)" >&2; exit 1; }

start_ready server "$out/server.log" "$bin" serve --listen 127.0.0.1:0 --threads 2 \
  --max-connections-per-source "$limit" --metrics 127.0.0.1:0
server=$PID addr=$ADDR metrics=$METRICS
pids+=("$server")
echo "server on $addr (2 reactors, --max-connections-per-source $limit), metrics on $metrics"

"$attacker" --addr "$addr" --source 127.0.0.2 --connections "$attack" --period 1.5s \
  --duration "${seconds}s" ${reconnect:+--reconnect} >"$out/attacker.txt" 2>&1 &
attacker_pid=$!
pids+=("$attacker_pid")
echo "attacker from 127.0.0.2: $attack connections, an empty frame every 1.5 s, ${seconds} s${reconnect:+, reconnecting}"

# The victim starts once the attacker holds its share (two periods at most; 10 s bound).
for _ in $(seq 1 200); do
  [ "$(metric tabecho_connections_open reactor)" -ge "$limit" ] && break
  sleep 0.05
done
held=$(metric tabecho_connections_open reactor)
echo "attacker holds $held connections; victim from 127.0.0.3: 100 connections, 5000 frames/s, ${victim_seconds} s"
set +e
"$bin" load --addr "$addr" --source 127.0.0.3 --connections 100 --threads 1 --pipeline 4 \
  --rate 5000 --duration "${victim_seconds}s" --json >"$out/victim.json" 2>"$out/victim.err"
victim_status=$?
wait "$attacker_pid"
attacker_status=$?
set -e

refused_seen=$(field refused "$out/attacker.txt")
per_source=$(metric tabecho_rejected_total 'reason="per_source"')
global=$(metric tabecho_rejected_total 'reason="global"')
kill -TERM "$server"
wait "$server" || true
summary=$(grep -m1 'shutdown: ' "$out/server.log" || true)

echo "attacker: $(cat "$out/attacker.txt")"
echo "victim:   $(cat "$out/victim.json")"
echo "server:   ${summary#*shutdown: }"
check "victim verified, nothing lost" "$victim_status" "exit $victim_status; frames_answered $(field frames_answered "$out/victim.json") of $(field frames_sent "$out/victim.json"), lost $(field lost "$out/victim.json")"
[ "$(field error_replies "$out/victim.json")" = 0 ] && [ "$(field server_closes "$out/victim.json")" = 0 ] \
  && [ "$(field established "$out/victim.json")" = 100 ]
check "victim never refused" $? "established $(field established "$out/victim.json") of 100, error replies $(field error_replies "$out/victim.json"), server closes $(field server_closes "$out/victim.json")"
[ "$(field held_max "$out/attacker.txt")" = "$limit" ]
check "attacker held at most $limit at once" $? "held at most $(field held_max "$out/attacker.txt")"
attacker_clean="lost $(field lost "$out/attacker.txt"), unsettled $(field unsettled "$out/attacker.txt"), closed unexpectedly $(field closed_unexpectedly "$out/attacker.txt"), frames late by 500 ms or more $(field late_frames "$out/attacker.txt")"
attacker_served="served $(field served "$out/attacker.txt"), held at the end $(field held_end "$out/attacker.txt")"
late=$(field late_frames "$out/attacker.txt")
if [ "$late" = 0 ]; then
  check "attacker's run clean (nothing owed lost, no unexpected close)" "$attacker_status" "$attacker_clean"
  [ "$(field served "$out/attacker.txt")" = "$limit" ] && [ "$(field held_end "$out/attacker.txt")" = "$limit" ]
  check "attacker served exactly $limit, all held to the end" $? "$attacker_served"
else
  echo "      attacker (not checked: $late of its frames left 0.5 s or more late, this machine"
  echo "      being busy, and the server may rightly reap such connections as idle): $attacker_clean; $attacker_served"
fi
[ -n "$refused_seen" ] && [ "$refused_seen" = "$per_source" ]
check "refusals counted exactly" $? "attacker read $refused_seen refusal lines; tabecho_rejected_total{reason=\"per_source\"} = $per_source"
[ "$global" = 0 ]; check "no global refusal" $? "tabecho_rejected_total{reason=\"global\"} = $global"
log_lines=$(grep -c 'refusing connections from 127.0.0.2' "$out/server.log" || true)
echo "      log: $log_lines 'refusing connections from 127.0.0.2' lines in ${seconds} s (at most one per 10 s)"

if [ $failures = 0 ]; then echo "PASS"; else echo "FAIL: $failures check(s)"; exit 1; fi
