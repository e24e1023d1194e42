#!/usr/bin/env bash
# Refreshes the console's screenshots in docs/console/ (map, an edge, flows, rules, replay,
# nodes), taken by the console's browser test in a real headless Chromium. As root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
cargo build -q --workspace --bins
EASTWALL_SCREENSHOTS="$PWD/docs/console" cargo nextest run -p eastwall-integration --test console
ls -l docs/console/
