#!/usr/bin/env bash
# Checks deploy/tabecho.service and deploy/tabecho.socket with systemd's own tools:
#
#   scripts/verify-units.sh
#
# `systemd-analyze verify` must print nothing (it reports unknown keys and bad values on
# stderr yet exits 0, so any output fails here). The units name /usr/local/bin/tabecho,
# which verify requires to exist: they are checked as copies in a temporary directory with
# ExecStart rewritten to the binary built here. Then `systemd-analyze security --offline`
# scores the sandbox (0 = locked down, 10 = exposed) and must stay at or below 2.0.
# Installs the systemd package from Debian's packages if systemd-analyze is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v systemd-analyze >/dev/null; then
  echo "systemd-analyze is missing: installing it from Debian's packages (apt-get install systemd)"
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get install -y systemd >/dev/null || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y systemd >/dev/null; }
fi

cargo build --release --quiet
bin=$(realpath "${CARGO_TARGET_DIR:-target}")/release/tabecho
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp deploy/tabecho.socket "$dir/"
sed "s#/usr/local/bin/tabecho#$bin#" deploy/tabecho.service >"$dir/tabecho.service"

fail=0
# --man=no: Documentation=man:tabecho(1) names the page the Debian package installs, which
# need not be installed here; `cargo xtask package --check` verifies the installed units with it.
out=$(systemd-analyze verify --man=no "$dir/tabecho.socket" "$dir/tabecho.service" 2>&1) || fail=1
if [ -n "$out" ] || [ $fail = 1 ]; then
  echo "FAIL: systemd-analyze verify:"
  echo "$out"
  exit 1
fi
echo "ok: systemd-analyze verify deploy/tabecho.service deploy/tabecho.socket: clean"

exposure=$(systemd-analyze security --offline=true "$dir/tabecho.service" 2>&1 \
  | sed -n 's/.*Overall exposure level for tabecho.service: \([0-9.]*\).*/\1/p')
if [ -z "$exposure" ]; then
  echo "FAIL: systemd-analyze security printed no exposure level"
  exit 1
fi
if awk -v e="$exposure" 'BEGIN { exit !(e > 2.0) }'; then
  echo "FAIL: sandbox exposure $exposure > 2.0 (systemd-analyze security --offline=true)"
  exit 1
fi
echo "ok: sandbox exposure $exposure (systemd-analyze security; 0 = locked down, 10 = exposed)"
