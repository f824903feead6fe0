#!/usr/bin/env bash
# repeat-tests.sh N: runs `cargo test` N times in a row (default 30) and prints each run's
# failures, then a summary. A test that fails one run in N is a bug, not bad luck: run
# this while the machine is busy, e.g. beside `scripts/loadgen.sh -d 20m`.
#
# Exit status: 0 if every run passed, 1 otherwise. Logs of failed runs stay in
# target/repeat-tests/.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}
logs=target/repeat-tests
mkdir -p "$logs"
cargo test --no-run --quiet || exit 2
failed=0
for i in $(seq 1 "$runs"); do
  log="$logs/run-$i.log"
  start=$(date +%s)
  if cargo test >"$log" 2>&1; then
    echo "run $i/$runs: ok ($(( $(date +%s) - start )) s)"
    rm -f "$log"
  else
    failed=$((failed + 1))
    echo "run $i/$runs: FAILED ($(( $(date +%s) - start )) s), log $log:"
    grep -E "^    [a-z_:]+$|^test .* FAILED|panicked at" "$log" | sed 's/^/    /' | head -20
  fi
done
echo "repeat-tests: $((runs - failed)) of $runs runs passed, $failed failed"
[ "$failed" -eq 0 ]
