#!/usr/bin/env bash
# Checks that Cargo.toml's rust-version is honest about the dependencies: no package in
# Cargo.lock that this host's build uses (normal, build and dev dependencies) may declare
# a rust-version above ours. Clippy's incompatible_msrv lint checks our own code against
# it; this checks everything else, which that lint cannot see.
#
#   scripts/check-msrv.sh          (run by .ci/run after cargo clippy has fetched the crates)
#
# Installs jq from Debian's packages if it is missing, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v jq >/dev/null; then
  echo "jq is missing: installing it from Debian's packages (apt-get install jq)"
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get install -y jq >/dev/null || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y jq >/dev/null; }
fi

host=$(rustc -vV | sed -n 's/^host: //p')
ours=$(cargo metadata --format-version 1 --no-deps --locked | jq -r '.packages[] | select(.name == "tabecho") | .rust_version')
# "1.85" and "1.85.0" are the same version: compare as three numbers.
above=$(cargo metadata --format-version 1 --locked --filter-platform "$host" \
  | jq -r '.packages[] | select(.rust_version != null) | "\(.rust_version) \(.name) \(.version)"' \
  | awk -v ours="$ours" '
      function key(v,   p) { split(v, p, "."); return p[1] * 1000000 + p[2] * 1000 + p[3] }
      key($1) > key(ours) { print "  " $2 " " $3 " needs rustc " $1 }')
if [ -n "$above" ]; then
  echo "FAIL: Cargo.toml says rust-version = $ours, but these dependencies need more:"
  echo "$above"
  echo "Raise rust-version, or pin an older release (cargo update -p NAME --precise VERSION)."
  exit 1
fi
echo "ok: rust-version $ours covers every dependency built on $host"
