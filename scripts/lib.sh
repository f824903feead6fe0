# shellcheck shell=bash
# Shared by the scripts still in shell (per-source.sh): source it from the repository's
# root, do not run it. The system checks' own helpers are in Rust (crates/harness, xtask/).

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
  METRICS=""
  { read -r -t 60 ADDR && { read -r -t 1 METRICS || true; }; } <"$fifo" || ADDR=""
  rm -f "$fifo"
  METRICS=${METRICS#http://}
  # shellcheck disable=SC2034 # for the caller
  METRICS=${METRICS%/metrics}
  [ -n "$ADDR" ] || { echo "$name did not start (see $log)"; exit 2; }
}
