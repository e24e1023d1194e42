#!/usr/bin/env bash
# The whole test suite (as root): formatting, lints, unit tests, and the end-to-end tests in
# network namespaces. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/setup-debian.sh
cargo fmt --all -- --check
cargo clippy -q --workspace --all-targets -- -D warnings
# The end-to-end tests run the `eastwall` binary; build every binary before the tests.
cargo build -q --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
cargo build -q --workspace --benches
echo "test suite took $(( $(date +%s) - start )) s"
