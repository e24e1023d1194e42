#!/usr/bin/env bash
# Builds eastwall and runs its demo (as root): `scripts/demo.sh [--keep]`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
# `eastwall demo` execs `eastwall-demo` (crate eastwall-lab) from beside the eastwall binary.
cargo build -q -p eastwall-node --bin eastwall -p eastwall-lab --bin eastwall-demo
exec target/debug/eastwall demo "$@"
