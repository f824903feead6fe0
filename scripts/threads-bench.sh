#!/bin/sh
# The threads-bench check, now in Rust: `cargo xtask threads-bench --help` (xtask/src/threads_bench.rs).
cd "$(dirname "$0")/.." && exec cargo xtask threads-bench "$@"
