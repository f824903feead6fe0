#!/usr/bin/env bash
# soak.sh: a long run of healthy and misbehaving clients against a release server, then
# the checks that matter after hours: nothing lost, every fault got its documented
# outcome, no descriptor or memory leak, the server still answers and exits cleanly.
#
# Usage: scripts/soak.sh [MINUTES]    (default 5; see --help)
# Exit status: 0 PASS, 1 FAIL, 2 the build or the server start failed.
set -euo pipefail

usage() {
    cat <<'USAGE'
scripts/soak.sh [MINUTES]      (default 5)

Builds the release tabecho binary, starts `tabecho serve` on a free loopback port with
a 1 s idle timeout and a stats line every 5 s, and runs for MINUTES minutes:

  tabecho load --connections 10000 --connect-rate 2000 --rate 30000
               --faults reset,halfclose,slowread,noread,trickle,oversize,garbage
               --fault-pause 2s --idle-timeout 1s --duration ${MINUTES}m

9,000 healthy connections each send a frame every 300 ms (well inside the idle
timeout); 1,000 faulty ones (10%, about 143 per kind) cycle connect, misbehave, check,
pause. Every 5 s the server is sampled: RSS (/proc/PID/status), open descriptors
(/proc/PID/fd), connections open (its stats line). At the end:

  1. load exit 0: the healthy clients lost nothing, no corruption, and every fault cycle
     got its documented outcome (docs/PROTOCOL.md);
  2. once the clients are gone and the idle timeout has passed, the server's open
     descriptors are back to their number before the run;
  3. its RSS is at most the warm-up's peak plus a margin of 10% or 1 MiB, whichever is
     larger (no leak). The warm-up is the first third of the run, at most 60 s. Its
     peak, not one sample, because RSS swings by tens of MB with the noread clients'
     backlogs (the server holds at most 2 x --high-water, 64 KiB at the defaults, for
     each; the rest waits in the kernel's capped socket buffers);
  4. it still answers (`tabecho send`);
  5. SIGTERM (by its PID) stops it with exit status 0.

Prints the samples, the load report and PASS or FAIL. Files are kept in a temporary
directory (printed). Environment overrides: SOAK_CONNECTIONS, SOAK_RATE,
SOAK_CONNECT_RATE, SOAK_FAULT_PAUSE, SOAK_IDLE (the server's idle timeout),
SOAK_SAMPLE_SECS; CARGO_BUILD_JOBS limits the build.
USAGE
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
esac
minutes="${1:-5}"
if ! [[ "$minutes" =~ ^[0-9]+$ ]] || ((minutes < 1)); then
    echo "soak: MINUTES must be a whole number of minutes, at least 1 (got '$minutes')" >&2
    exit 2
fi

connections="${SOAK_CONNECTIONS:-10000}"
rate="${SOAK_RATE:-30000}"
connect_rate="${SOAK_CONNECT_RATE:-2000}"
fault_pause="${SOAK_FAULT_PAUSE:-2s}"
idle="${SOAK_IDLE:-1s}"
sample_secs="${SOAK_SAMPLE_SECS:-5}"
faults="reset,halfclose,slowread,noread,trickle,oversize,garbage"
# The leak margin over the warm-up's peak RSS: 10%, or 1 MiB if that is larger.
rss_margin_pct=10
rss_margin_min_kb=1024
# The warm-up: a third of the run, at most 60 s.
warmup_secs=$((minutes * 60 / 3))
((warmup_secs > 60)) && warmup_secs=60
# The idle timeout in whole seconds, rounded up, for the wait after the clients leave.
idle_secs=$(awk -v d="$idle" 'BEGIN { v = d + 0; if (d ~ /ms$/) v /= 1000; printf "%d", v + 0.999 }')

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
. scripts/lib.sh
echo "soak: building the release binary" >&2
if ! cargo build --release --quiet --bin tabecho; then
    echo "soak: the build failed" >&2
    exit 2
fi
bin="${CARGO_TARGET_DIR:-$root/target}/release/tabecho"
dir="$(mktemp -d "${TMPDIR:-/tmp}/tabecho-soak.XXXXXX")"
echo "soak: files in $dir" >&2

server_pid=""
load_pid=""
sampler_pid=""
cleanup() {
    # Only the processes this script started, by their PIDs.
    for pid in "$sampler_pid" "$load_pid" "$server_pid"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
}
trap cleanup EXIT

# The server, on a free port (port 0), logging its stats; its address from its log.
RUST_LOG=info "$bin" serve --listen 127.0.0.1:0 --idle-timeout "$idle" \
    --stats-interval "${sample_secs}s" 2>"$dir/server.log" &
server_pid=$!
if ! addr="$(listening_addr "$dir/server.log" 5)"; then
    echo "soak: the server did not start listening:" >&2
    cat "$dir/server.log" >&2
    exit 2
fi

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$server_pid/status" 2>/dev/null || echo 0; }
fd_count() { find "/proc/$server_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
open_conns() {
    # The last stats line: "stats: N connections open; ..."
    sed -n 's/.*stats: \([0-9]*\) connections open.*/\1/p' "$dir/server.log" | tail -1
}

fds_start="$(fd_count)"
rss_start="$(rss_kb)"
start=$(date +%s)
echo "soak: server PID $server_pid on $addr (idle timeout $idle): $fds_start fds, RSS $rss_start kB" >&2

# Samples: seconds since start, phase, RSS, fds, connections open (last stats line).
sample() {
    printf '%s %s %s %s %s\n' "$(($(date +%s) - start))" "$1" "$(rss_kb)" "$(fd_count)" \
        "$(open_conns)" >>"$dir/samples"
}
sample before

# The load, bounded: its duration, the drain, and two minutes to spare.
timeout --signal=INT $((minutes * 60 + 120)) "$bin" load --addr "$addr" \
    --connections "$connections" --connect-rate "$connect_rate" --rate "$rate" \
    --faults "$faults" --fault-pause "$fault_pause" --idle-timeout "$idle" \
    --duration "${minutes}m" >"$dir/load.out" 2>"$dir/load.err" &
load_pid=$!
(
    while kill -0 "$load_pid" 2>/dev/null; do
        sleep "$sample_secs"
        if (($(date +%s) - start <= warmup_secs)); then sample warmup; else sample run; fi
    done
) &
sampler_pid=$!
load_status=0
wait "$load_pid" || load_status=$?
load_pid=""
wait "$sampler_pid" 2>/dev/null || true
sampler_pid=""

# The clients are gone: wait out the idle timeout (and a stats line), then measure.
sleep $((idle_secs + sample_secs + 1))
sample after
fds_end="$(fd_count)"
rss_end="$(rss_kb)"
rss_warm="$(awk '$2 == "warmup" && $3 > m { m = $3 } END { print m + 0 }' "$dir/samples")"
margin=$((rss_warm * rss_margin_pct / 100))
((margin < rss_margin_min_kb)) && margin=$rss_margin_min_kb

answer="$("$bin" send --addr "$addr" --timeout 5s soak-still-answering 2>&1)" || true

kill -TERM "$server_pid" 2>/dev/null || true
server_status=0
wait "$server_pid" || server_status=$?
server_pid=""

echo
echo "samples (every ${sample_secs}s; server RSS, open fds, connections open from its stats line)"
printf '%8s  %-7s %10s %8s %12s\n' "t (s)" "phase" "RSS (kB)" "fds" "conns open"
while read -r t phase rss fds conns; do
    printf '%8s  %-7s %10s %8s %12s\n' "$t" "$phase" "$rss" "$fds" "${conns:--}"
done <"$dir/samples"
echo
echo "load report ($bin load ... --duration ${minutes}m):"
cat "$dir/load.out"
echo
echo "server: $(grep 'shutdown:' "$dir/server.log" | tail -1 | sed 's/.*shutdown: //')"
echo

verdict=0
check() {
    # check OK DESCRIPTION
    if [[ "$1" == ok ]]; then
        echo "  ok    $2"
    else
        echo "  FAIL  $2"
        verdict=1
    fi
}
echo "checks"
[[ "$load_status" == 0 ]] && s=ok || s=fail
check "$s" "load exit status $load_status (0: no loss, no corruption, every fault as documented)"
[[ "$fds_end" == "$fds_start" ]] && s=ok || s=fail
check "$s" "open fds after the clients left and the idle timeout passed: $fds_end (before: $fds_start)"
((rss_end <= rss_warm + margin)) && s=ok || s=fail
check "$s" "RSS after: $rss_end kB <= warm-up peak $rss_warm kB + margin $margin kB (started at $rss_start kB)"
[[ "$answer" == "server got:soak-still-answering" ]] && s=ok || s=fail
check "$s" "still answering: tabecho send got '$answer'"
[[ "$server_status" == 0 ]] && s=ok || s=fail
check "$s" "SIGTERM: the server exited with status $server_status"
echo
if ((verdict == 0)); then
    echo "PASS  (soak of $minutes min, $connections connections, files in $dir)"
else
    echo "FAIL  (soak of $minutes min, $connections connections, files in $dir)"
fi
exit "$verdict"
