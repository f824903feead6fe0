#!/usr/bin/env bash
# Builds the Debian package target/debian/tabecho_<version>-1_<arch>.deb with cargo-deb:
#
#   scripts/package.sh            build the package
#   scripts/package.sh --check    build it, then lintian, install it (dpkg -i), try it
#                                 (tabecho --version, man tabecho, bash completion,
#                                 systemd-analyze verify on the installed units), purge it
#                                 (dpkg --purge) and check that nothing it installed is left
#
# What the package ships besides the binary is rendered from the binary just built, into
# target/deb-assets/ (Cargo.toml's [package.metadata.deb] names these paths):
#   tabecho.1.gz              `tabecho man`, gzip -9n (Debian policy: compressed, no name or
#                             time stamp in the gzip header, so builds are reproducible)
#   completions/              `tabecho completions bash|zsh|fish`
#   systemd/                  deploy/tabecho.{socket,service}, ExecStart at /usr/bin/tabecho
#   copyright                 the Debian copyright file (DEP-5) from LICENSE-MIT
#   THIRD-PARTY-LICENSES.gz   the license and notice files of every crate in the binary
#   changelog.gz              CHANGELOG.md, gzip -9n, named as Debian names upstream changelogs
#   changelog.Debian          the package's own changelog: one entry, dated as CHANGELOG.md
#                             dates this version (cargo-deb gzips it)
#   maintainer-scripts/       empty: cargo-deb writes the systemd steps into the scripts
# and then `cargo deb --no-build --strip` packs it with the binary, stripped. (cargo-deb
# still warns that "the debug symbols may be bloated": it reads [profile.release] debug =
# true, kept for profilers; the binary in the package has none.)
#
# Installs what it needs, and says so: cargo-deb (cargo install --locked), jq, and for
# --check lintian and man-db (apt-get). --check needs root (dpkg -i), or sudo.
#
# lintian: the script fails on any error (E:) or warning (W:) but those kept below, each for
# its reason. Every tag, down to info (I:) and pedantic (P:), is printed. Info tags today:
#   hardening-no-fortify-functions: _FORTIFY_SOURCE is a C compiler step that swaps
#     unchecked libc calls for checked ones (__memcpy_chk, ...); rustc has no such step, and
#     Rust code is bounds-checked by the language.
#   no-md5sums-control-file: cargo-deb writes no md5sums file, so `dpkg --verify tabecho`
#     has no checksums to compare the installed files with; nothing else uses it.
#   package-supports-alternative-init-but-no-init.d-script: tabecho's service needs systemd
#     (socket activation, Type=notify); without systemd run `tabecho serve` directly.
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "usage: scripts/package.sh [--check]" >&2; exit 2 ;;
esac

if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi

# apt_install PACKAGE COMMAND: installs PACKAGE from Debian's packages when COMMAND is missing.
apt_install() {
  if ! command -v "$2" >/dev/null; then
    echo "== $2 is missing: installing it from Debian's packages (apt-get install $1)"
    $SUDO apt-get install -y "$1" >/dev/null \
      || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y "$1" >/dev/null; }
  fi
}

# cargo-deb, pinned like cargo-deny in .ci/run: its Cargo.toml keys are what we wrote for.
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
  echo "== installing cargo-deb $CARGO_DEB_VERSION (cargo install --locked; measured 2 min 18 s here)"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi

echo "== cargo build --release --locked"
cargo build --release --locked
bin=target/release/tabecho
# The package's version: the first `version = ` of Cargo.toml, the [package] one.
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || { echo "FAIL: no version in Cargo.toml" >&2; exit 1; }

echo "== rendering the man page, completions, units, copyright and changelog into target/deb-assets"
assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/completions" "$assets/systemd" "$assets/maintainer-scripts"
"$bin" man | gzip -9n >"$assets/tabecho.1.gz"
"$bin" completions bash >"$assets/completions/tabecho"
"$bin" completions zsh >"$assets/completions/_tabecho"
"$bin" completions fish >"$assets/completions/tabecho.fish"
cp deploy/tabecho.socket "$assets/systemd/tabecho.socket"
sed 's#^ExecStart=/usr/local/bin/tabecho #ExecStart=/usr/bin/tabecho #' deploy/tabecho.service \
  >"$assets/systemd/tabecho.service"
if ! grep -q '^ExecStart=/usr/bin/tabecho ' "$assets/systemd/tabecho.service"; then
  echo "FAIL: deploy/tabecho.service has no ExecStart=/usr/local/bin/tabecho to point at /usr/bin" >&2
  exit 1
fi
gzip -9n <CHANGELOG.md >"$assets/changelog.gz"
released=$(sed -n "s/^## \[$version\] - \([0-9-]*\)\$/\1/p" CHANGELOG.md)
[ -n "$released" ] || { echo "FAIL: CHANGELOG.md has no '## [$version] - YYYY-MM-DD'" >&2; exit 1; }
maintainer=$(sed -n 's/^maintainer = "\(.*\)"$/\1/p' Cargo.toml)
{
  echo "tabecho ($version-1) unstable; urgency=medium"
  echo
  echo "  * tabecho $version, packaged with cargo-deb (scripts/package.sh). What changed"
  echo "    is in /usr/share/doc/tabecho/changelog.gz."
  echo
  echo " -- $maintainer  $(LC_ALL=C date -u -R -d "$released")"
} >"$assets/changelog.Debian"
{
  echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: tabecho"
  echo "Upstream-Contact: The tabecho developers"
  echo "Comment: /usr/bin/tabecho also holds the crates it is built from; their licenses and"
  echo " notices are in /usr/share/doc/tabecho/THIRD-PARTY-LICENSES.gz."
  echo
  echo "Files: *"
  echo "Copyright: 2026 The tabecho developers"
  echo "License: Expat or Apache-2.0"
  echo
  # Debian calls the MIT license Expat. Its text from LICENSE-MIT, as DEP-5 wants it: one
  # space before each line, " ." for an empty one.
  echo "License: Expat"
  sed -n '/^Permission is hereby granted/,$p' LICENSE-MIT | sed 's/^$/./; s/^/ /'
  echo
  echo "License: Apache-2.0"
  echo " On Debian systems, the full text of the Apache License, Version 2.0, is in"
  echo " /usr/share/common-licenses/Apache-2.0 (and in LICENSE-APACHE in the source)."
} >"$assets/copyright"

# The notices of the crates in the binary: it links them (normal dependencies; proc-macros
# run only at compile time), and their licenses (MIT, Apache-2.0 and the like) ask that
# their notices go with it. Each crate's license as its Cargo.toml states it, then the
# license and notice files it ships; a text seen before is named, not repeated.
apt_install jq jq
manifests=$(cargo metadata --format-version 1 --locked \
  | jq -r '.packages[] | "\(.name) v\(.version) \(.manifest_path)"')
crates=$(cargo tree -e normal,no-proc-macro --prefix none -f '{p}|{l}' --locked \
  | sed 's/ (\*)$//' | grep -v '^tabecho ' | sort -u)
declare -A seen=()
{
  echo "tabecho $version links the $(wc -l <<<"$crates") crates below, from crates.io."
  while IFS='|' read -r crate license; do
    dir=$(dirname "$(awk -v c="$crate" '$1 " " $2 == c { print $3 }' <<<"$manifests")")
    echo
    echo "=== $crate: $license"
    found=0
    for file in "$dir"/LICEN[CS]E* "$dir"/COPYING* "$dir"/NOTICE* "$dir"/UNLICENSE*; do
      [ -f "$file" ] || continue
      found=1
      sum=$(sha256sum <"$file")
      if [ -n "${seen[$sum]:-}" ]; then
        echo "--- $(basename "$file"): the same text as ${seen[$sum]}"
      else
        seen[$sum]="$crate, $(basename "$file")"
        echo "--- $(basename "$file")"
        cat "$file"
      fi
    done
    [ $found = 1 ] || echo "--- (the crate ships no license file)"
  done <<<"$crates"
} | gzip -9n >"$assets/THIRD-PARTY-LICENSES.gz"

echo "== cargo deb --no-build --strip"
cargo deb --no-build --strip --locked
deb=target/debian/tabecho_${version}-1_$(dpkg --print-architecture).deb
[ -f "$deb" ] || { echo "FAIL: $deb was not built" >&2; exit 1; }
echo "built $deb"
[ "$check" = 1 ] || exit 0

echo "== lintian $deb"
apt_install lintian lintian
# -I --pedantic: every tag down to info and pedantic is printed; E: and W: fail below.
lintian_out=$(lintian -I --pedantic "$deb" 2>&1) || true
echo "${lintian_out:-(nothing to report)}"
# Warnings kept, and why:
#   initial-upload-closes-no-bugs: Debian's archive wants a first upload to close its ITP
#     bug; this package is not uploaded to Debian, so there is no such bug to close.
kept='initial-upload-closes-no-bugs'
if grep -E '^[EW]: ' <<<"$lintian_out" | grep -qvE "^W: tabecho: ($kept)( |$)"; then
  echo "FAIL: lintian reports errors or warnings" >&2
  exit 1
fi

echo "== dpkg -i"
$SUDO dpkg -i "$deb"
installed=$(dpkg -L tabecho)
# Whatever happens from here on, the package does not stay installed.
purged=0
trap '[ $purged = 1 ] || $SUDO dpkg --purge tabecho >/dev/null 2>&1 || true' EXIT

echo "== tabecho --version"
# By its path: a tabecho in /usr/local/bin (docs/OPERATIONS.md, "Run as a service") comes
# first in PATH.
got=$(/usr/bin/tabecho --version)
[ "$got" = "tabecho $version" ] || { echo "FAIL: tabecho --version said '$got'" >&2; exit 1; }
echo "$got"

echo "== man tabecho"
apt_install man-db man
page=$(MANWIDTH=80 man -P cat tabecho 2>&1)
for heading in "TABECHO SERVE" "--max-buffer-memory" "EXIT STATUS"; do
  grep -q -- "$heading" <<<"$page" || { echo "FAIL: man tabecho shows no '$heading'" >&2; exit 1; }
done
echo "ok: $(wc -l <<<"$page") lines, a section per subcommand"

echo "== bash completion"
bash -c 'source /usr/share/bash-completion/completions/tabecho; complete -p tabecho'

echo "== systemd-analyze verify on the installed units"
apt_install systemd systemd-analyze
units=$(grep -E '/systemd/system/tabecho\.(socket|service)$' <<<"$installed" || true)
[ "$(wc -l <<<"$units")" = 2 ] || { echo "FAIL: the package holds no tabecho.socket and .service" >&2; exit 1; }
# shellcheck disable=SC2086 # two paths without spaces, one word each
out=$(systemd-analyze verify $units 2>&1) || { echo "FAIL: $out" >&2; exit 1; }
[ -z "$out" ] || { echo "FAIL: systemd-analyze verify: $out" >&2; exit 1; }
echo "ok: clean: $(tr "\n" " " <<<"$units")"

echo "== dpkg --purge"
$SUDO dpkg --purge tabecho
purged=1
left=""
while IFS= read -r path; do
  [ -e "$path" ] || continue
  # A directory another package owns too (/usr/bin, /usr/share/man/man1) rightly stays;
  # one only tabecho had (/usr/share/doc/tabecho) must be gone.
  if [ -d "$path" ] && dpkg -S "$path" >/dev/null 2>&1; then continue; fi
  left="$left $path"
done <<<"$installed"
# deb-systemd-helper's records (enabled and masked states) go with the purge too.
state=$(find /etc/systemd /var/lib/systemd -name 'tabecho.*' 2>/dev/null || true)
left="$left${state:+ $state}"
if [ -n "$left" ]; then
  echo "FAIL: left behind after purge:$left" >&2
  exit 1
fi
if dpkg -s tabecho >/dev/null 2>&1; then
  echo "FAIL: dpkg still knows tabecho after purge" >&2
  exit 1
fi
echo "ok: purged, none of the $(wc -l <<<"$installed") paths it installed is left"
echo "PASS: $deb"
