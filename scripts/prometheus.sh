#!/usr/bin/env bash
# A real Prometheus scrapes tabecho: the counters it stores must equal a verified load.
#
#   scripts/prometheus.sh [FRAMES]        (default FRAMES=100000)
#
# Starts a release `tabecho serve --metrics` on loopback and a Prometheus of its own (a
# temporary config scraping tabecho every second, its TSDB in a temporary directory, its
# web port on 127.0.0.1; the Debian service is not used), runs `tabecho load --frames` of
# FRAMES frames in all (10 connections, pipeline 32, every reply verified), waits for a
# scrape after the load, reads tabecho_frames_total back through Prometheus' HTTP query
# API and compares it with FRAMES, and runs `promtool check metrics` on the page.
# Prints each result; exits 1 on any failure. Stops what it started on exit.
# Installs Debian's prometheus package (which brings promtool) if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
frames=${1:-100000}
connections=10
if [ $((frames % connections)) != 0 ]; then
  echo "FRAMES must be a multiple of $connections" >&2
  exit 2
fi

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  echo "prometheus is missing: installing it from Debian's packages (apt-get install prometheus)"
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get install -y prometheus >/dev/null || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y prometheus >/dev/null; }
fi
for tool in curl jq; do
  command -v $tool >/dev/null || { echo "$tool is needed (apt-get install $tool)" >&2; exit 1; }
done

cargo build --release --quiet
bin=target/release/tabecho
tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

failures=0
check() { # check NAME OK? DETAIL
  if [ "$2" = 0 ]; then echo "ok:   $1 ($3)"; else echo "FAIL: $1 ($3)"; failures=$((failures + 1)); fi
}

# tabecho, both ports picked by the kernel.
"$bin" serve --listen 127.0.0.1:0 --metrics 127.0.0.1:0 2>"$tmp/tabecho.log" &
pids+=($!)
addr=$(listening_addr "$tmp/tabecho.log" 10) || { echo "tabecho did not start:"; cat "$tmp/tabecho.log"; exit 1; }
metrics=$(sed -n 's#.*metrics on http://\(.*\)/metrics$#\1#p' "$tmp/tabecho.log" | head -n1)
echo "tabecho on $addr, metrics on http://$metrics/metrics"

# Prometheus on a free loopback port (bound and released; a lost race fails the start).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$tmp/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: tabecho
    static_configs:
      - targets: ['$metrics']
YAML
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
  --web.listen-address="127.0.0.1:$port" >"$tmp/prometheus.log" 2>&1 &
pids+=($!)
api="http://127.0.0.1:$port"
for _ in $(seq 1 200); do
  curl -fs "$api/-/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "$api/-/ready" >/dev/null || { echo "Prometheus did not start:"; tail "$tmp/prometheus.log"; exit 1; }
echo "Prometheus on $api, scraping every second"

# query EXPR: the first sample's value, or nothing.
query() {
  curl -fsG "$api/api/v1/query" --data-urlencode "query=$1" | jq -r '.data.result[0].value[1] // empty'
}

set +e
"$bin" load --addr "$addr" --connections $connections --threads 1 --pipeline 32 --size 32 \
  --frames $((frames / connections)) --duration 600s >"$tmp/load.txt" 2>&1
status=$?
set -e
check "tabecho load: $frames frames verified" $status "exit $status; $(grep -m1 '^frames' "$tmp/load.txt" || true)"

# A scrape after the load: the stored value moves to the final count within a few
# scrape intervals (bounded: 20 s).
value=""
for _ in $(seq 1 200); do
  value=$(query 'tabecho_frames_total{job="tabecho",reactor="0"}')
  [ "$value" = "$frames" ] && break
  sleep 0.1
done
[ "$value" = "$frames" ]; check "Prometheus stored tabecho_frames_total = $frames" $? "read back ${value:-nothing} via $api/api/v1/query"
up=$(query 'up{job="tabecho"}')
[ "$up" = 1 ]; check "scrape target up" $? "up = ${up:-nothing}"
eof=$(query 'tabecho_closed_total{job="tabecho",reason="eof"}')
echo "      tabecho_closed_total{reason=\"eof\"} = ${eof:-nothing} (the load's $connections connections)"
p99=$(query 'histogram_quantile(0.99, sum by (le) (tabecho_reactor_turn_seconds_bucket{job="tabecho"}))')
echo "      reactor turn p99 (histogram_quantile over all turns) = ${p99:-nothing} s"

curl -fs "http://$metrics/metrics" >"$tmp/page.txt"
set +e
lint=$(promtool check metrics <"$tmp/page.txt" 2>&1)
status=$?
set -e
check "promtool check metrics" $status "${lint:-no findings}"

if [ $failures = 0 ]; then echo "PASS"; else echo "FAIL: $failures check(s)"; exit 1; fi
