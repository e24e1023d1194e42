#!/usr/bin/env bash
# The whole test suite (as root): formatting, lints, unit tests, and the end-to-end tests in
# network namespaces. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/setup-debian.sh
# The Debian package test builds the .deb with cargo-deb (crates.io; pinned).
command -v cargo-deb >/dev/null || cargo install -q cargo-deb --locked --version 3.8.0
# The Kubernetes manifests are checked against the API's schemas (PyPI; pinned).
python3 -c "import kubernetes_validate" 2>/dev/null || python3 -m pip install -q kubernetes-validate==1.37.0
cargo fmt --all -- --check
cargo clippy -q --workspace --all-targets -- -D warnings
# The end-to-end tests run the `eastwall` binary; build every binary before the tests.
cargo build -q --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
# The benchmarks must keep building; with the dev profile they reuse the test build (the
# release build is for running them: scripts/bench.sh, cargo bench).
cargo build -q --workspace --benches --profile dev
echo "test suite took $(( $(date +%s) - start )) s"
