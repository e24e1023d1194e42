#!/usr/bin/env bash
# Builds eastwall and runs its demo (as root): `scripts/demo.sh [--keep]`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
cargo build -q -p eastwall-node --bin eastwall
exec target/debug/eastwall demo "$@"
