#!/bin/sh
# The attack check, now in Rust: `cargo xtask attack --help` (xtask/src/attack.rs).
cd "$(dirname "$0")/.." && exec cargo xtask attack "$@"
