#!/usr/bin/env bash
# Fuzz one of the pure cores with cargo-fuzz for SECONDS. TARGET is one of
# fuzz/fuzz_targets/: frame_decoder (FrameDecoder against split-on-TAB, the default) or
# proxy_header (the PROXY protocol parser's verdicts on every prefix).
#
#   scripts/fuzz.sh [TARGET] [SECONDS]   # default frame_decoder, 600 s
#   scripts/fuzz.sh 30                   # frame_decoder, a smoke run
#   scripts/fuzz.sh proxy_header 600
#   FUZZ_SANITIZER=address scripts/fuzz.sh 600    # with AddressSanitizer (slower)
#
# Extra arguments after SECONDS go to libFuzzer (e.g. -jobs=1 -workers=1, -max_len=4096).
# The corpus grows in fuzz/corpus/TARGET/, crashes land in fuzz/artifacts/TARGET/ (both
# git-ignored); replay one with
#   cargo fuzz run --sanitizer none TARGET fuzz/artifacts/TARGET/crash-...
# Exits non-zero if the fuzzer found a failure.
#
# Toolchain and sanitizer. Our machines have only the stable toolchain, and cargo fuzz's
# default sanitizer needs a nightly-only flag (-Zsanitizer=address): on stable that build
# fails with "the option `Z` is only accepted on the nightly compiler". What works here
# (rustc 1.95.0 stable, cargo-fuzz 0.13.2, both checked):
# - `--sanitizer none` (this script's default, FUZZ_SANITIZER=none): cargo fuzz then passes
#   no -Z flag at all, only stable -C flags (-Cpasses=sancov-module and the
#   -Cllvm-args=-sanitizer-coverage-* that guide libFuzzer), so plain stable builds it.
#   The code under test has no `unsafe` (safe Rust already panics on out-of-bounds and
#   overflow; cargo fuzz turns debug assertions on), so AddressSanitizer finds nothing
#   more, and without it a run does ~144k exec/s here against ~54k with it.
#   libFuzzer then prints three harmless lines at start:
#     WARNING: Failed to find function "__sanitizer_acquire_crash_state". (and two more)
# - FUZZ_SANITIZER=address (or any other cargo fuzz sanitizer): the script sets
#   RUSTC_BOOTSTRAP=1, which makes the stable rustc accept -Z flags; nothing else about
#   the compiler changes. Works with the stable toolchain's bundled ASan runtime.
# Both also work, unchanged, on a nightly toolchain.
#
# Builds in release with debug assertions into fuzz/target/ (about a minute with
# CARGO_BUILD_JOBS=1 on 2 cores). Nothing here is built by the root's `cargo test`.
set -euo pipefail

cd "$(dirname "$0")/.."
target=frame_decoder
if [[ $# -gt 0 && ! "$1" =~ ^[0-9]+$ ]]; then
  target="$1"
  shift
fi
seconds="${1:-600}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ && -f "fuzz/fuzz_targets/$target.rs" ]]; then
  echo "usage: scripts/fuzz.sh [TARGET] [SECONDS] [libFuzzer args...]" >&2
  targets=(fuzz/fuzz_targets/*.rs)
  targets=("${targets[@]##*/}")
  echo "targets: ${targets[*]%.rs}" >&2
  exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz (once)"
  cargo install cargo-fuzz --locked
fi
cargo fuzz --version

sanitizer="${FUZZ_SANITIZER:-none}"
if [[ "$sanitizer" != none ]]; then
  # Stable rustc accepts -Zsanitizer=... only with this (see above).
  export RUSTC_BOOTSTRAP=1
fi
echo "== cargo fuzz run --sanitizer $sanitizer $target for ${seconds}s"
exec cargo fuzz run --sanitizer "$sanitizer" "$target" -- -max_total_time="$seconds" "$@"
