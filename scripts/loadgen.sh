#!/usr/bin/env bash
# loadgen.sh: build tabecho (release) once, make sure a server listens, run `tabecho load`.
#
# Usage: scripts/loadgen.sh [load options]      (see --help)
# Exit status: the load generator's (0 verified, 1 lost/corrupt, 3 could not run), or 2
# when the build or the server start fails.
set -euo pipefail

usage() {
    cat <<'USAGE'
scripts/loadgen.sh [load options]

Builds the release tabecho binary once (cargo build --release), starts a server on the
load address if nothing listens there yet (and stops that server, by its own PID, at
the end), runs `tabecho load` with the options and prints its summary.

Defaults (those of `tabecho load`): --addr 127.0.0.1:8085, 100 connections,
pipeline 16, 32-byte frames, 10 s. Any option of `tabecho load` may be given, e.g.

  scripts/loadgen.sh                                  # the defaults
  scripts/loadgen.sh -c 10000 --connect-rate 5000 -d 20s --warmup 5s
  scripts/loadgen.sh --rate 50000 -c 500 -d 30s       # open loop, CO-free latency
  scripts/loadgen.sh --idle -c 10000 -d 5s            # hold idle, watch the reaping
  scripts/loadgen.sh --addr unix:/tmp/tabecho.sock --json

Environment: CARGO_BUILD_JOBS limits the build's parallelism; SERVE_ARGS adds options
to the server started here (e.g. SERVE_ARGS="--idle-timeout 30s").
Exit status: that of tabecho load (0 every reply verified, 1 frames lost or corrupt,
3 could not run); 2 if the build or the server start failed.
USAGE
}

addr="127.0.0.1:8085"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        -h | --help)
            usage
            echo
            echo "Options of tabecho load:"
            exec cargo run --quiet --release --bin tabecho -- load --help
            ;;
        --addr) addr="${args[$((i + 1))]:-$addr}" ;;
        --addr=*) addr="${args[$i]#--addr=}" ;;
    esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
echo "loadgen: building the release binary" >&2
if ! cargo build --release --quiet --bin tabecho; then
    echo "loadgen: the build failed" >&2
    exit 2
fi
bin="${CARGO_TARGET_DIR:-$root/target}/release/tabecho"

server_pid=""
stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
}
trap stop_server EXIT

# `send` exits 3 when it cannot connect: then nothing listens and we start a server.
listening() { "$bin" send --addr "$addr" --timeout 1s >/dev/null 2>&1 || [[ $? -ne 3 ]]; }

if listening; then
    echo "loadgen: a server already listens on $addr; using it" >&2
else
    echo "loadgen: starting tabecho serve --listen $addr ${SERVE_ARGS:-}" >&2
    # shellcheck disable=SC2086 # SERVE_ARGS is a list of options on purpose
    RUST_LOG="${RUST_LOG:-warn}" "$bin" serve --listen "$addr" ${SERVE_ARGS:-} &
    server_pid=$!
    for _ in $(seq 100); do
        listening && break
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "loadgen: the server exited at start" >&2
            server_pid=""
            exit 2
        fi
        sleep 0.05
    done
    if ! listening; then
        echo "loadgen: the server does not answer on $addr" >&2
        exit 2
    fi
fi

status=0
"$bin" load "$@" || status=$?
exit "$status"
