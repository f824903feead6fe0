#!/bin/sh
# The Debian package, now in Rust: `cargo xtask package [--check]` (xtask/src/package.rs).
cd "$(dirname "$0")/.." && exec cargo xtask package "$@"
