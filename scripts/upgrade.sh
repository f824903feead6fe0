#!/usr/bin/env bash
# upgrade.sh: upgrade a loaded release server in place (SIGUSR2) and count who noticed.
#
# A release `tabecho serve`; short connections as the original Go client makes them
# (connect, one frame, read the reply, close) at SHORT_RATE per second from a small Python
# loop; LONG long-lived connections under `tabecho load --rate`; SIGUSR2 in the middle.
# Reports the short connections refused, reset, wrong and timed out (all must be 0), and
# the load's report (lost/corrupt, server_closes: the long-lived connections of the old
# process are busy, so its drain ends them at --shutdown-grace with the shutdown's
# lingering close).
#
# Usage: scripts/upgrade.sh            (environment: DURATION=10 seconds, UPGRADE_AT=3,
#                                       SHORT_RATE=300, LONG=200, LONG_RATE=2000 frames/s,
#                                       GRACE=3s, IDLE=2s, THREADS=1 reactors)
# Exit status: 0 if every short connection was served; 1 if any failed; 2 if the build,
# the server or the upgrade failed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

duration=${DURATION:-10}
upgrade_at=${UPGRADE_AT:-3}
short_rate=${SHORT_RATE:-300}
long=${LONG:-200}
long_rate=${LONG_RATE:-2000}
grace=${GRACE:-3s}
idle=${IDLE:-2s}
threads=${THREADS:-1}

echo "upgrade: building the release binary" >&2
cargo build --release --quiet --bin tabecho || exit 2
bin="${CARGO_TARGET_DIR:-$root/target}/release/tabecho"
work=$(mktemp -d)
server_pid=""
new_pid=""
cleanup() {
    for pid in $server_pid $new_pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" serve --listen 127.0.0.1:0 --threads "$threads" --idle-timeout "$idle" \
    --shutdown-grace "$grace" 2>"$work/server.log" &
server_pid=$!
addr=$(listening_addr "$work/server.log" 30) || {
    echo "upgrade: the server did not start" >&2
    cat "$work/server.log" >&2
    exit 2
}
echo "upgrade: server PID $server_pid on $addr" >&2

# Short connections: one frame each, as the Go client; every outcome counted.
python3 - "$addr" "$duration" "$short_rate" >"$work/short.txt" <<'PY' &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
duration, rate = float(sys.argv[2]), float(sys.argv[3])
counts = dict(ok=0, refused=0, reset=0, wrong=0, timed_out=0, other=0)
start = time.monotonic()
n = 0
while True:
    due = start + n / rate
    now = time.monotonic()
    if now - start >= duration:
        break
    if due > now:
        time.sleep(due - now)
    frame = b"short %d" % n
    n += 1
    try:
        s = socket.create_connection((host, int(port)), timeout=2)
        s.sendall(frame + b"\t")
        want = b"server got:" + frame + b"\t"
        got = b""
        while len(got) < len(want):
            chunk = s.recv(len(want) - len(got))
            if not chunk:
                break
            got += chunk
        s.close()
        if got == want:
            counts["ok"] += 1
        elif got == b"" or want.startswith(got):
            counts["reset"] += 1  # EOF before the whole reply: as bad as a reset
        else:
            counts["wrong"] += 1
    except ConnectionRefusedError:
        counts["refused"] += 1
    except ConnectionResetError:
        counts["reset"] += 1
    except socket.timeout:
        counts["timed_out"] += 1
    except OSError as e:
        counts["other"] += 1
        print("error:", e, file=sys.stderr)
print(" ".join("%s=%d" % kv for kv in counts.items()))
PY
short_pid=$!

"$bin" load --addr "$addr" -c "$long" --rate "$long_rate" -d "${duration}s" \
    --connect-rate 1000 >"$work/load.txt" 2>"$work/load.log" &
load_pid=$!

sleep "$upgrade_at"
usr2_ms=$(date +%s%3N)
echo "upgrade: SIGUSR2 to PID $server_pid at ${upgrade_at} s" >&2
kill -USR2 "$server_pid"
while ! grep -q "serves now; draining\|upgrade failed" "$work/server.log"; do
    sleep 0.01
    kill -0 "$server_pid" 2>/dev/null || break
done
ready_ms=$(date +%s%3N)
if ! grep -q "serves now; draining" "$work/server.log"; then
    echo "upgrade: the upgrade failed:" >&2
    cat "$work/server.log" >&2
    exit 2
fi
new_pid=$(sed -n 's/.*upgrade: PID \([0-9]*\) serves now.*/\1/p' "$work/server.log")
wait "$server_pid" && old_status=0 || old_status=$?
old_exit_ms=$(date +%s%3N)
server_pid=""
wait "$short_pid" || true
wait "$load_pid" && load_status=0 || load_status=$?

echo
echo "== upgrade in place: $long long-lived connections at $long_rate frames/s," \
    "short connections at $short_rate/s, ${duration} s, SIGUSR2 at ${upgrade_at} s" \
    "(--threads $threads --idle-timeout $idle --shutdown-grace $grace)"
echo "new process ready (PID $new_pid) $((ready_ms - usr2_ms)) ms after SIGUSR2;" \
    "old process exited ($old_status) $((old_exit_ms - usr2_ms)) ms after SIGUSR2"
grep -E "upgrade|inherited|shutting down|shutdown:" "$work/server.log" | sed 's/^/  log: /'
echo "short connections: $(cat "$work/short.txt")"
echo "long-lived connections (tabecho load, exit $load_status):"
sed 's/^/  /' "$work/load.txt"
kill -TERM "$new_pid" 2>/dev/null || true
new_pid=""

if grep -qE "refused=0 reset=0 wrong=0 timed_out=0 other=0" "$work/short.txt"; then
    echo "verdict: every short connection served"
else
    echo "verdict: FAILED: short connections failed"
    exit 1
fi
