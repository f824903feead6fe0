#!/bin/sh
# The upgrade check, now in Rust: `cargo xtask upgrade --help` (xtask/src/upgrade.rs).
cd "$(dirname "$0")/.." && exec cargo xtask upgrade "$@"
