#!/bin/sh
# The haproxy-bench check, now in Rust: `cargo xtask haproxy-bench --help` (xtask/src/haproxy_bench.rs).
cd "$(dirname "$0")/.." && exec cargo xtask haproxy-bench "$@"
