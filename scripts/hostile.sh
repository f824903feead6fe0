#!/bin/sh
# The hostile check, now in Rust: `cargo xtask hostile --help` (xtask/src/hostile.rs).
cd "$(dirname "$0")/.." && exec cargo xtask hostile "$@"
