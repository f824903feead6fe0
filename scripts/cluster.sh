#!/bin/sh
# The cluster check, now in Rust: `cargo xtask cluster --help` (xtask/src/cluster.rs).
cd "$(dirname "$0")/.." && exec cargo xtask cluster "$@"
