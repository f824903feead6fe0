#!/bin/sh
# The c100k check, now in Rust: `cargo xtask c100k --help` (xtask/src/c100k.rs).
cd "$(dirname "$0")/.." && exec cargo xtask c100k "$@"
