#!/bin/sh
# The idle-memory check, now in Rust: `cargo xtask idle-memory --help` (xtask/src/idle_memory.rs).
cd "$(dirname "$0")/.." && exec cargo xtask idle-memory "$@"
