#!/bin/sh
# The callgrind check, now in Rust: `cargo xtask callgrind --help` (xtask/src/callgrind.rs).
cd "$(dirname "$0")/.." && exec cargo xtask callgrind "$@"
