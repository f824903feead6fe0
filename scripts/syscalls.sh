#!/bin/sh
# The syscalls check, now in Rust: `cargo xtask syscalls --help` (xtask/src/syscalls.rs).
cd "$(dirname "$0")/.." && exec cargo xtask syscalls "$@"
