#!/bin/sh
# The prometheus check, now in Rust: `cargo xtask prometheus --help` (xtask/src/prometheus.rs).
cd "$(dirname "$0")/.." && exec cargo xtask prometheus "$@"
