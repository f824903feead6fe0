#!/bin/sh
# The per-source check, now in Rust: `cargo xtask per-source --help` (xtask/src/per_source.rs).
cd "$(dirname "$0")/.." && exec cargo xtask per-source "$@"
