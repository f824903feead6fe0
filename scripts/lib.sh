# shellcheck shell=bash
# Shared by the scripts: source it, do not run it (from the repository's root).

# The release binaries, in the target directory cargo uses (CARGO_TARGET_DIR honoured).
# shellcheck disable=SC2034 # for the scripts that source this
target_dir=${CARGO_TARGET_DIR:-target}
# shellcheck disable=SC2034
bin=$target_dir/release/tabecho

# raise_nofile N: raises the soft descriptor limit to N, or to the hard limit if that is
# lower; never fails (the caller checks `ulimit -n` against what it needs and says why).
raise_nofile() {
  ulimit -n "$1" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

# start_ready NAME LOG CMD...: runs the `tabecho serve` command CMD with `--ready-fd 3`
# in the background (stderr to LOG) and reads the address it writes there once it
# listens (no log scraping); sets PID and ADDR (and METRICS, with --metrics), or exits 2
# saying NAME did not start.
start_ready() {
  local name=$1 log=$2 fifo
  shift 2
  fifo=$(mktemp -u "${TMPDIR:-/tmp}/tabecho-ready.XXXXXX")
  mkfifo "$fifo"
  "$@" --ready-fd 3 3>"$fifo" 2>"$log" &
  PID=$!
  started_pids+=("$PID")
  METRICS=""
  { read -r -t 60 ADDR && { read -r -t 1 METRICS || true; }; } <"$fifo" || ADDR=""
  rm -f "$fifo"
  METRICS=${METRICS#http://}
  # shellcheck disable=SC2034 # for the caller
  METRICS=${METRICS%/metrics}
  [ -n "$ADDR" ] || { echo "$name did not start (see $log)"; exit 2; }
}

# listening_addr LOG [SECONDS]: waits (default 60 s) for the first "listening on ADDR" line
# a server wrote to LOG and prints ADDR; prints nothing and fails if none came. For the
# comparison servers (ceiling, tokio-echo) only: tabecho's address comes from start_ready.
listening_addr() {
  local log=$1 tries=$(( ${2:-60} * 20 )) addr=""
  for _ in $(seq 1 "$tries"); do
    addr=$(sed -n 's/.*listening on \(.*\)$/\1/p' "$log" 2>/dev/null | head -n1)
    if [ -n "$addr" ]; then
      echo "$addr"
      return 0
    fi
    sleep 0.05
  done
  return 1
}

# Servers started by start_server and start_ready, killed by stop_servers (install it:
# trap stop_servers EXIT).
started_pids=()

# start_server NAME LOG CMD...: runs CMD in the background (stdout and stderr to LOG),
# waits for its "listening on" line; sets PID and ADDR, or exits 2 saying NAME did not start.
start_server() {
  local name=$1 log=$2
  shift 2
  : >"$log"
  "$@" >"$log" 2>&1 &
  PID=$!
  started_pids+=("$PID")
  # shellcheck disable=SC2034 # PID and ADDR are for the caller.
  ADDR=$(listening_addr "$log") || { echo "$name did not start"; exit 2; }
}

# stop_servers: kills every server start_server started (for an EXIT trap).
stop_servers() { for p in "${started_pids[@]}"; do kill "$p" 2>/dev/null || true; done; }

# kb PID FIELD: FIELD of /proc/PID/status in kB (VmRSS, VmHWM).
kb() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }

# holders N SECS ADDR [SOCKBUF]: N connections that each send 65,535 bytes without a TAB
# and hold them for SECS (from the start); prints how each ended: held, closed with the
# budget's error line, closed without it. SOCKBUF caps their socket buffers (bytes), as an
# attacker on its own machine would not count against the server's kernel.
holders() {
  python3 - "$@" <<'PY'
import socket, sys, time
n, secs, addr = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
sockbuf = int(sys.argv[4]) if len(sys.argv) > 4 else 0
host, port = addr.rsplit(":", 1)
end = time.monotonic() + secs
socks = []
for _ in range(n):
    s = socket.socket()
    if sockbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sockbuf)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sockbuf)
    s.connect((host, int(port)))
    s.sendall(b"p" * 65535)
    s.setblocking(False)
    socks.append(s)
time.sleep(max(0, end - time.monotonic()))
held = evicted = closed = 0
for s in socks:
    try:
        data = s.recv(256)
    except BlockingIOError:
        held += 1
        continue
    except ConnectionError:
        closed += 1
        continue
    if data.startswith(b"error: server buffer memory exhausted"):
        evicted += 1
    else:
        closed += 1
print(f"partial holders: {held} held, {evicted} closed with the budget's error line, {closed} closed without it")
PY
}

