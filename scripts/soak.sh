#!/bin/sh
# The soak check, now in Rust: `cargo xtask soak --help` (xtask/src/soak.rs).
cd "$(dirname "$0")/.." && exec cargo xtask soak "$@"
